"""Two-channel neural enhancement front-end and enhanced/mixture sequence fusion (paper 000 §2.4).

``MaskEnhancer``: a complex ratio mask on the near channel's STFT, estimated from both channels. Per frame the
input is the log-magnitudes of near and far and the cosine/sine of their phase difference (4 x F values); a
linear layer, a GRU over time and a linear layer give a bounded complex mask (real and imaginary parts in
[-2, 2]) that multiplies the near STFT; the inverse STFT gives the enhanced waveform. It starts as the identity
(zero-initialised output, mask = 1), so training begins from the near channel itself.

``GatedCrossAttentionFusion``: the enhanced token sequence attends to the mixture tokens (keys = mixture,
padded keys masked) and a sigmoid gate per token and channel decides how much of that context to add:
``H = H_enh + g * CrossAttn(H_enh, H_m)``, ``g = sigmoid(W [H_enh; CrossAttn])``.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskEnhancer(nn.Module):
    def __init__(self, n_fft: int = 512, hop_length: int = 128, hidden: int = 256, rnn_hidden: int = 128):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        freqs = n_fft // 2 + 1
        self.inp = nn.Sequential(nn.Linear(4 * freqs, hidden), nn.LayerNorm(hidden), nn.ReLU())
        self.rnn = nn.GRU(hidden, rnn_hidden, batch_first=True)
        self.out = nn.Linear(rnn_hidden, 2 * freqs)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, 2, S]`` (near, far) -> enhanced near waveform ``[B, S]``."""
        b, _, s = wave.shape
        spec = torch.stft(
            wave.reshape(2 * b, s),
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        ).view(b, 2, self.n_fft // 2 + 1, -1)
        near, far = spec[:, 0], spec[:, 1]
        phase = torch.angle(near) - torch.angle(far)
        feats = torch.cat([torch.log1p(near.abs()), torch.log1p(far.abs()), torch.cos(phase), torch.sin(phase)], dim=1)
        h, _ = self.rnn(self.inp(feats.transpose(1, 2)))
        m = 2.0 * torch.tanh(self.out(h)).transpose(1, 2)  # [B, 2F, T]
        mask = torch.complex(1.0 + m[:, : near.shape[1]], m[:, near.shape[1] :])
        return torch.istft(mask * near, self.n_fft, self.hop_length, window=self.window, center=True, length=s)


class GatedCrossAttentionFusion(nn.Module):
    def __init__(self, dim: int, num_heads: int = 4):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.gate = nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h_enh: torch.Tensor, h_mix: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token sequences ``[B, T, D]`` of both branches; ``mask [B, T]`` True = valid token."""
        ctx, _ = self.attn(h_enh, h_mix, h_mix, key_padding_mask=None if mask is None else ~mask, need_weights=False)
        g = torch.sigmoid(self.gate(torch.cat([h_enh, ctx], dim=-1)))
        return self.norm(h_enh + g * ctx)
