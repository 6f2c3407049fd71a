"""LoRA adapters on a frozen encoder, through peft (only the adapters train)."""

from __future__ import annotations

from torch import nn


def with_lora(encoder: nn.Module, rank: int, alpha: int, target_modules: list[str], dropout: float = 0.0):
    """``encoder`` wrapped by peft with LoRA on the named projections; the base weights are frozen.
    ``get_base_model()`` of the result is the encoder itself (its adapted layers included)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        encoder, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    )


def last_block_targets(model: nn.Module, block_class: str, n_blocks: int, projections: tuple[str, ...]) -> list[str]:
    """Full module names of ``projections`` inside the last ``n_blocks`` modules of class ``block_class`` (in
    ``named_modules`` order, i.e. depth order across stages), for peft ``target_modules``; LoRA on "the last four
    blocks" (paper 002 §2.2) is then exactly those layers and no others."""
    blocks = [name for name, m in model.named_modules() if type(m).__name__ == block_class]
    if len(blocks) < n_blocks:
        raise ValueError(f"{type(model).__name__} has {len(blocks)} {block_class} blocks, fewer than {n_blocks}")
    names = dict(model.named_modules())
    targets = [f"{b}.{p}" for b in blocks[len(blocks) - n_blocks :] for p in projections]
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"{type(model).__name__}: no module {missing[0]!r} to adapt")
    return targets
