"""ViT blocks with timm's parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
so official timm-format checkpoints (M2D, CED, Dasheng, EAT) load without timm. Attention is SDPA with an
optional key padding mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None
        if key_padding_mask is not None:  # additive float-min (not -inf): a fully padded row attends uniformly
            mask = torch.zeros(b, 1, 1, n, dtype=q.dtype, device=q.device).masked_fill(
                key_padding_mask[:, None, None, :], torch.finfo(q.dtype).min
            )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN (timm): ``x + attn(norm1 x)``, ``x + mlp(norm2 x)``; post-LN (EAT's AltBlock): ``norm1(x + attn x)``,
    ``norm2(x + mlp x)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        eps: float = 1e-6,
        post_norm: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.post_norm = post_norm

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.post_norm:
            x = self.norm1(x + self.attn(x, key_padding_mask))
            return self.norm2(x + self.mlp(x))
        x = x + self.attn(self.norm1(x), key_padding_mask)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: tuple[int, int], stride: tuple[int, int] | None = None):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch, stride=stride or patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def infer_vit_size(state: dict[str, torch.Tensor], prefix: str = "") -> dict:
    """``embed_dim`` and ``depth`` from a state dict; the head count is not in the weights (default head dim 64)."""
    dim = state[f"{prefix}patch_embed.proj.weight"].shape[0]
    depth = 1 + max(int(k[len(prefix) :].split(".")[1]) for k in state if k.startswith(f"{prefix}blocks."))
    return {"embed_dim": dim, "depth": depth, "num_heads": max(1, dim // 64)}
