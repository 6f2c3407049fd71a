"""Encoders behind one protocol (``asdzoo.encoders.base``); ``load_encoder(name, ...)`` builds one by name."""

from __future__ import annotations

from asdzoo.encoders.base import Encoder

ENCODERS = {
    "logmel": "asdzoo.encoders.logmel:LogMelEncoder",
    "aisfx": "asdzoo.encoders.aisfx:AisfxEncoder",
    "beats": "asdzoo.encoders.beats:BEATs",
    "m2d": "asdzoo.encoders.m2d:M2D",
    "eat": "asdzoo.encoders.eat:EAT",
    "sslam": "asdzoo.encoders.eat:SSLAM",
    "m2d_clap": "asdzoo.encoders.m2d_clap:M2DClap",
    "openl3": "asdzoo.encoders.openl3:OpenL3",
    "dasheng": "asdzoo.encoders.audiotransformer:Dasheng",
    "ced": "asdzoo.encoders.audiotransformer:CED",
    "ast": "asdzoo.encoders.hf:ASTEncoder",
    "clap": "asdzoo.encoders.hf:ClapEncoder",
    "wavlm": "asdzoo.encoders.hf:WavLMEncoder",
    "aum": "asdzoo.encoders.aum:AudioMamba",
}


# Where each encoder's official weights come from (sources as documented upstream; sha256 only where verified).
# Pass a downloaded file or a Hub id as `checkpoint=`; nothing is fetched implicitly except through huggingface_hub.
ENCODER_WEIGHTS = {
    "logmel": [dict(weights="none needed", licence="-")],
    "aisfx": [dict(weights="bundled in the aisfx wheel (models/checkpoint.pth)", licence="CC BY 4.0")],
    "beats": [
        dict(
            weights="BEATs_iter3.pt, BEATs_iter3_plus_AS2M.pt, *_finetuned_on_AS2M_cpt*.pt (links in "
            "github.com/microsoft/unilm/tree/master/beats)",
            licence="MIT (unilm)",
        )
    ],
    "m2d": [
        dict(
            weights="m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly/weights_ep69it3124-0.47998.pth "
            "(github.com/nttcslab/m2d releases; used by the DCASE 2025/2026 Task 4 baselines)",
            licence="see github.com/nttcslab/m2d",
        )
    ],
    "eat": [
        dict(
            weights="Hub worstchan/EAT-base_epoch30_pretrain, worstchan/EAT-large_epoch20_pretrain (transformers "
            "port, not loaded here) or the fairseq .pt files linked from github.com/cwx-worst-one/EAT",
            licence="see github.com/cwx-worst-one/EAT",
        )
    ],
    "dasheng": [
        dict(
            weights="zenodo.org/records/11511780 dasheng_base.pt / dasheng_06b.pt / dasheng_12b.pt",
            licence="see github.com/RicherMans/Dasheng",
        )
    ],
    "ced": [
        dict(
            weights="zenodo records 8275347 / 8275319: audiotransformer_{tiny,mini,small,base}_mAP_*.pt",
            licence="see github.com/RicherMans/CED",
        )
    ],
    "sslam": [
        dict(
            weights="fairseq SSLAM_Pretrained/checkpoint_last.pt, SSLAM_AS2M_Finetuned/checkpoint_best.pt (Hub "
            "ta012/SSLAM or the Drive folders linked from github.com/ta012/SSLAM; the transformers ports "
            "ta012/SSLAM_pretrain, ta012/SSLAM_AS2M_Finetuned are not loaded here)",
            licence="MIT (see github.com/ta012/SSLAM)",
        )
    ],
    "m2d_clap": [
        dict(
            weights="m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025/checkpoint-30.pth (github.com/nttcslab/m2d "
            "release v0.5.0 zip) or m2d_clap_vit_base-80x608p16x16-240128/checkpoint-300.pth (release v0.1.0); keep "
            "the folder name: it sets the input and patch sizes",
            licence="see github.com/nttcslab/m2d",
        )
    ],
    "openl3": [
        dict(
            weights="openl3_audio_{mel128,mel256,linear}_{music,env}-v0_4_0.h5.gz (models branch of "
            "github.com/marl/openl3; Keras HDF5, converted on load; or a .safetensors from "
            "asdzoo.encoders.openl3.save_safetensors)",
            licence="MIT (marl/openl3; no separate weights licence found)",
        )
    ],
    "ast": [dict(weights="Hub MIT/ast-finetuned-audioset-10-10-0.4593", licence="see the Hub model card")],
    "clap": [dict(weights="Hub laion/clap-htsat-unfused, laion/clap-htsat-fused", licence="see the Hub model card")],
    "wavlm": [dict(weights="Hub microsoft/wavlm-base-plus, microsoft/wavlm-large", licence="see the Hub model card")],
    "aum": [
        dict(
            weights="Audio-Mamba .pth checkpoints linked from github.com/kaistmm/Audio-Mamba-AuM (base scratch: v1 "
            "Fo-Bi; small ImageNet-init: v2 Bi-Bi), loaded with unshuffle=1, frontend='kaldi'",
            licence="see github.com/kaistmm/Audio-Mamba-AuM",
        )
    ],
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


__all__ = ["Encoder", "ENCODERS", "ENCODER_WEIGHTS", "load_encoder"]
