"""Encoders behind one protocol (``asdzoo.encoders.base``); ``load_encoder(name, ...)`` builds one by name."""
from __future__ import annotations

from asdzoo.encoders.base import Encoder

ENCODERS = {
    "logmel": "asdzoo.encoders.logmel:LogMelEncoder",
    "aisfx": "asdzoo.encoders.aisfx:AisfxEncoder",
    "beats": "asdzoo.encoders.beats:BEATs",
    "m2d": "asdzoo.encoders.m2d:M2D",
    "eat": "asdzoo.encoders.eat:EAT",
    "dasheng": "asdzoo.encoders.audiotransformer:Dasheng",
    "ced": "asdzoo.encoders.audiotransformer:CED",
    "ast": "asdzoo.encoders.hf:ASTEncoder",
    "clap": "asdzoo.encoders.hf:ClapEncoder",
    "wavlm": "asdzoo.encoders.hf:WavLMEncoder",
}


def load_encoder(name: str, checkpoint: str | None = None, layer: int | None = None, **overrides) -> Encoder:
    """Build encoder ``name``; ``checkpoint`` is a path or Hub id, ``layer`` picks an intermediate layer."""
    import importlib

    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(sorted(ENCODERS))}")
    module, cls = ENCODERS[name].split(":")
    kwargs = dict(overrides)
    if checkpoint is not None:
        kwargs["checkpoint"] = checkpoint
    if layer is not None:
        kwargs["layer"] = layer
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["Encoder", "ENCODERS", "load_encoder"]
