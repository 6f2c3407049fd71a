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
