"""ResUNetK: the label-queried separator of the DCASE 2026 Task 4 baseline, with the official state_dict layout.

Re-implemented after ``ResUNet30(input_channels=4, output_channels=1, target_sources_num=3, label_len=54)`` of
``nttcslab/dcase2026_task4_baseline`` @ 20e6992 (``src/models/resunet2/resunet_mod.py``, ``base.py``; the facts are
summarised in ``../shared/reference/resunetk``), so that its Lightning checkpoints load with ``strict=True``.

Per mixture channel: STFT (1024 / 160, periodic Hann, centred, reflect) -> magnitude -> BatchNorm over the 513 bins
-> a six-level residual UNet (32 ... 384 channels) in which every BatchNorm is followed by a FiLM bias computed from
the embedded 54-d label query (3 slots x 18 classes, a silent slot all zeros) -> per slot and channel a complex mask
(sigmoid magnitude, tanh-pair phase) applied to the mixture STFT -> a 1x1 conv mixing the masked channels into one
(separately on real and imaginary parts) -> ISTFT. Silent slots output zeros.

The official model computes its STFT with torchlibrosa's frozen Conv1d kernels, which its checkpoints carry
(``base.stft.*``, ``base.istft.*``; 3,147,776 of its 29,888,747 parameters). Here ``torch.stft`` / ``torch.istft``
compute the same transform, and the kernels are buffers computed in closed form: never trained, never used, and
checked on load, so a checkpoint whose kernels are not these (another window or FFT size, or kernels that were
fine-tuned) fails to load instead of loading silently.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.data.s5 import LABELS, MIX_CHANNELS, N_SLOTS

N_FFT, HOP = 1024, 160
MASK_PARTS = 3  # per slot and channel: magnitude, real and imaginary logits of the complex mask
BN_MOMENTUM = 0.01
LEAKY_SLOPE = 0.01
MAG_FLOOR = 1e-10  # torchlibrosa clamps power (STFT) and magnitude (mask phase) at this value
CONDITION_SIZE = 512
ENCODER_CHANNELS = (32, 64, 128, 256, 384, 384)
ENCODER_POOLS = ((2, 2), (2, 2), (2, 2), (2, 2), (2, 2), (1, 2))  # (time, frequency)
KERNEL_TOLERANCE = 1e-5  # relative to the kernel's peak; float32 rounding of torchlibrosa's kernels is ~6e-8


def _hann(n: int, like: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Periodic Hann, librosa's ``get_window('hann', n, fftbins=True)``."""
    dtype = dtype or (like.dtype if like is not None else torch.float32)
    return torch.hann_window(n, periodic=True, dtype=dtype, device=like.device if like is not None else None)


def torchlibrosa_kernels(n_fft: int = N_FFT) -> dict[str, torch.Tensor]:
    """The frozen tensors torchlibrosa 0.1.0 builds (``STFT``/``ISTFT`` with a Hann window, win = n_fft), computed
    in float64 with phases reduced modulo n_fft, then rounded to float32 as torchlibrosa stores them.

    STFT ``conv_*[k, 0, n] = w[n] e^{-2 pi i k n / N}`` (k < N/2 + 1); ISTFT ``conv_*[n, k, 0] = w[n] e^{+2 pi i n k /
    N} / N`` (the windowed inverse DFT of frame sample n); ``ola_window = w^2`` (the overlap-add normaliser).
    """
    window = _hann(n_fft, dtype=torch.float64)
    n = torch.arange(n_fft, dtype=torch.float64)
    forward_angle = 2 * math.pi * ((n[: n_fft // 2 + 1, None] * n) % n_fft) / n_fft
    inverse_angle = 2 * math.pi * ((n[:, None] * n) % n_fft) / n_fft
    kernels = {
        "stft.conv_real.weight": (torch.cos(forward_angle) * window)[:, None, :],
        "stft.conv_imag.weight": (-torch.sin(forward_angle) * window)[:, None, :],
        "istft.ola_window": window**2,
        "istft.conv_real.weight": (torch.cos(inverse_angle) * window[:, None] / n_fft)[:, :, None],
        "istft.conv_imag.weight": (torch.sin(inverse_angle) * window[:, None] / n_fft)[:, :, None],
    }
    return {k: v.float() for k, v in kernels.items()}


class AnalyticBuffers(nn.Module):
    """Constant tensors that official checkpoints carry: loading verifies the incoming values instead of trusting
    them (a mismatch becomes a ``load_state_dict`` error)."""

    def __init__(self, **buffers: torch.Tensor):
        super().__init__()
        for name, value in buffers.items():
            self.register_buffer(name, value)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs):
        for name, expected in self._buffers.items():
            got = state_dict.get(prefix + name)
            if got is None or got.shape != expected.shape:
                continue  # reported as missing / size mismatch by the default loader below
            diff = (got.to(expected) - expected).abs().max().item()
            limit = KERNEL_TOLERANCE * expected.abs().max().item()
            if not diff <= limit:
                error_msgs.append(
                    f"{prefix}{name}: not torchlibrosa's analytic Hann STFT kernel for n_fft={N_FFT} "
                    f"(max |difference| {diff:.3g} > {limit:.3g})"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs)


def _kernel_modules(n_fft: int) -> tuple[nn.Module, nn.Module]:
    """``base.stft`` and ``base.istft`` with the official key names."""
    k = torchlibrosa_kernels(n_fft)
    stft = AnalyticBuffers()
    stft.conv_real = AnalyticBuffers(weight=k["stft.conv_real.weight"])
    stft.conv_imag = AnalyticBuffers(weight=k["stft.conv_imag.weight"])
    istft = AnalyticBuffers(ola_window=k["istft.ola_window"])
    istft.conv_real = AnalyticBuffers(weight=k["istft.conv_real.weight"])
    istft.conv_imag = AnalyticBuffers(weight=k["istft.conv_imag.weight"])
    return stft, istft


def _bn_act(bn: nn.BatchNorm2d, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """BatchNorm, then the FiLM bias (the official FiLM has no gain), then leaky ReLU."""
    return F.leaky_relu(bn(x) + beta, LEAKY_SLOPE)


class ConvBlockRes(nn.Module):
    """Pre-activation residual block of two 3x3 convs; a 1x1 conv (with bias) matches the widths of the skip."""

    def __init__(self, c_in: int, c_out: int, film_name: str):
        super().__init__()
        self.film_name = film_name
        self.bn1 = nn.BatchNorm2d(c_in, momentum=BN_MOMENTUM)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def film_widths(self) -> dict[str, int]:
        return {f"{self.film_name}->beta1": self.bn1.num_features, f"{self.film_name}->beta2": self.bn2.num_features}

    def forward(self, x: torch.Tensor, betas: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.conv1(_bn_act(self.bn1, x, betas[f"{self.film_name}->beta1"]))
        h = self.conv2(_bn_act(self.bn2, h, betas[f"{self.film_name}->beta2"]))
        return self.shortcut(x) + h


class EncoderBlock(nn.Module):
    """A residual block, then average pooling; returns (pooled, unpooled skip)."""

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int], name: str):
        super().__init__()
        self.pool = pool
        self.conv_block1 = ConvBlockRes(c_in, c_out, f"{name}->conv_block1")

    def forward(self, x: torch.Tensor, betas: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv_block1(x, betas)
        return F.avg_pool2d(skip, self.pool), skip


class DecoderBlock(nn.Module):
    """Transposed conv (kernel = stride = upsampling factor) of the activated input, concatenated with the skip,
    then a residual block. ``bn2`` and its FiLM ``beta2`` exist in the official model but are never used: they are
    kept for the official key layout and frozen (no gradient reaches them either way; DDP refuses trainable
    parameters that get none)."""

    def __init__(self, c_in: int, c_out: int, up: tuple[int, int], name: str):
        super().__init__()
        self.film_name = name
        self.conv1 = nn.ConvTranspose2d(c_in, c_out, kernel_size=up, stride=up, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in, momentum=BN_MOMENTUM)
        self.conv_block2 = ConvBlockRes(2 * c_out, c_out, f"{name}->conv_block2")
        self.bn2 = nn.BatchNorm2d(c_in, momentum=BN_MOMENTUM).requires_grad_(False)
        self.unused_film = f"{name}->beta2"

    def film_widths(self) -> dict[str, int]:
        return {f"{self.film_name}->beta1": self.bn1.num_features, f"{self.film_name}->beta2": self.bn2.num_features}

    def forward(self, x: torch.Tensor, skip: torch.Tensor, betas: dict[str, torch.Tensor]) -> torch.Tensor:
        up = self.conv1(_bn_act(self.bn1, x, betas[f"{self.film_name}->beta1"]))
        return self.conv_block2(torch.cat([up, skip], dim=1), betas)


class ResUNetBase(nn.Module):
    """STFT -> UNet -> complex masks -> ISTFT (the official ``ResUNet30_Base``, key prefix ``base.``)."""

    def __init__(self, input_channels: int, output_channels: int, n_sources: int, channels: tuple[int, ...]):
        super().__init__()
        self.input_channels, self.output_channels, self.n_sources = input_channels, output_channels, n_sources
        self.time_multiple = math.prod(p[0] for p in ENCODER_POOLS)
        self.stft, self.istft = _kernel_modules(N_FFT)
        self.bn0 = nn.BatchNorm2d(N_FFT // 2 + 1, momentum=BN_MOMENTUM)
        self.pre_conv = nn.Conv2d(input_channels, channels[0], 1)
        self.encoder_names = tuple(f"encoder_block{i + 1}" for i in range(len(channels)))
        for name, c_in, c_out, pool in zip(self.encoder_names, (channels[0], *channels[:-1]), channels, ENCODER_POOLS):
            self.add_module(name, EncoderBlock(c_in, c_out, pool, name))
        self.conv_block7a = EncoderBlock(channels[-1], channels[-1], (1, 1), "conv_block7a")
        self.decoder_names = tuple(f"decoder_block{i + 1}" for i in range(len(channels)))
        outs = channels[::-1]
        for name, c_in, c_out, up in zip(self.decoder_names, (outs[0], *outs[:-1]), outs, ENCODER_POOLS[::-1]):
            self.add_module(name, DecoderBlock(c_in, c_out, up, name))
        self.after_conv = nn.Conv2d(channels[0], n_sources * input_channels * MASK_PARTS, 1)
        self.out_conv = nn.Conv2d(input_channels, output_channels, 1)

    def film_widths(self) -> dict[str, int]:
        """Width of every FiLM bias, keyed by the official FiLM names (``encoder_block1->conv_block1->beta1``)."""
        widths: dict[str, int] = {}
        for module in self.modules():
            if isinstance(module, (ConvBlockRes, DecoderBlock)):
                widths.update(module.film_widths())
        return widths

    def spectrogram_phase(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, C, S]`` -> magnitude, cos and sin of the phase, each ``[B, C, T, F]`` (torchlibrosa's layout)."""
        b, c, s = wave.shape
        spec = torch.stft(
            wave.reshape(b * c, s),
            N_FFT,
            HOP,
            window=_hann(N_FFT, wave),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        spec = spec.reshape(b, c, *spec.shape[-2:]).transpose(-1, -2)
        mag = (spec.real**2 + spec.imag**2).clamp_min(MAG_FLOOR).sqrt()
        return mag, spec.real / mag, spec.imag / mag

    def unet(self, mag: torch.Tensor, betas: dict[str, torch.Tensor]) -> torch.Tensor:
        """Magnitudes ``[B, C, T, F]`` -> mask logits ``[B, n_sources * C * 3, T, F]``."""
        frames = mag.shape[2]
        x = self.bn0(mag.transpose(1, 3)).transpose(1, 3)
        # time padded to a multiple of the total pooling, the Nyquist bin dropped (513 -> 512) so F halves evenly
        x = F.pad(x, (0, 0, 0, -frames % self.time_multiple))[..., :-1]
        x = self.pre_conv(x)
        skips = []
        for name in self.encoder_names:
            x, skip = getattr(self, name)(x, betas)
            skips.append(skip)
        x, _ = self.conv_block7a(x, betas)
        for name, skip in zip(self.decoder_names, reversed(skips)):
            x = getattr(self, name)(x, skip, betas)
        x = self.after_conv(x)
        return F.pad(x, (0, 1))[:, :, :frames]  # Nyquist bin back (as zeros), time padding cut

    def masks_to_waveform(
        self, logits: torch.Tensor, mag: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, length: int
    ) -> torch.Tensor:
        """Mask logits and the mixture STFT -> waveforms ``[B, n_sources, output_channels, length]``."""
        b, _, t, f = logits.shape
        x = logits.reshape(b, self.n_sources, self.input_channels, MASK_PARTS, t, f)
        mask_mag = torch.sigmoid(x[:, :, :, 0])
        mask_re, mask_im = torch.tanh(x[:, :, :, 1]), torch.tanh(x[:, :, :, 2])
        mask_abs = (mask_re**2 + mask_im**2).sqrt().clamp_min(MAG_FLOOR)
        mask_cos, mask_sin = mask_re / mask_abs, mask_im / mask_abs
        cos, sin = cos[:, None], sin[:, None]
        out_mag = F.relu(mag[:, None] * mask_mag)
        shape = (b * self.n_sources, self.input_channels, t, f)
        real = self.out_conv((out_mag * (cos * mask_cos - sin * mask_sin)).reshape(shape))
        imag = self.out_conv((out_mag * (sin * mask_cos + cos * mask_sin)).reshape(shape))
        spec = torch.complex(real, imag).reshape(-1, t, f).transpose(1, 2)
        wave = torch.istft(spec, N_FFT, HOP, window=_hann(N_FFT, real), center=True, length=length)
        return wave.reshape(b, self.n_sources, self.output_channels, length)

    def forward(self, mixture: torch.Tensor, betas: dict[str, torch.Tensor]) -> torch.Tensor:
        mag, cos, sin = self.spectrogram_phase(mixture)
        return self.masks_to_waveform(self.unet(mag, betas), mag, cos, sin, mixture.shape[-1])


def slot_mask(label_vector: torch.Tensor, n_slots: int = N_SLOTS) -> torch.Tensor:
    """``[B, n_slots * C]`` query -> ``[B, n_slots]``: 1 where a slot names a class, 0 where it is silent (zeros)."""
    return (label_vector.reshape(label_vector.shape[0], n_slots, -1).sum(-1) != 0).to(label_vector.dtype)


class ResUNetK(nn.Module):
    """The baseline separator: ``forward(mixture [B, 4, S], label_vector [B, 54])`` ->
    ``{'waveform': [B, 3, 1, S], 'source_mask': [B, 3]}``.

    ``width`` scales every feature width (UNet channels and the 512-d condition) for small CPU models; the default
    1 is the official model, whose checkpoints load (see ``load_resunetk``).
    """

    def __init__(
        self,
        input_channels: int = MIX_CHANNELS,
        output_channels: int = 1,
        target_sources_num: int = N_SLOTS,
        label_len: int = N_SLOTS * len(LABELS),
        width: float = 1.0,
    ):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        channels = tuple(max(1, round(c * width)) for c in ENCODER_CHANNELS)
        cond = max(1, round(CONDITION_SIZE * width))
        self.n_sources = target_sources_num
        self.base = ResUNetBase(input_channels, output_channels, target_sources_num, channels)
        self.label_embedding = nn.Sequential(
            nn.Linear(label_len, cond),
            nn.LayerNorm(cond),
            nn.ReLU(),
            nn.Linear(cond, cond),
            nn.LayerNorm(cond),
            nn.ReLU(),
        )
        self.film = nn.ModuleDict({name: nn.Linear(cond, c) for name, c in self.base.film_widths().items()})
        for block in self.base.modules():
            if isinstance(block, DecoderBlock):
                self.film[block.unused_film].requires_grad_(False)

    def forward(self, mixture: torch.Tensor, label_vector: torch.Tensor) -> dict[str, torch.Tensor]:
        condition = self.label_embedding(label_vector)
        betas = {name: layer(condition)[:, :, None, None] for name, layer in self.film.items()}
        source_mask = slot_mask(label_vector, self.n_sources)
        waveform = self.base(mixture, betas) * source_mask[:, :, None, None]
        return {"waveform": waveform, "source_mask": source_mask}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a Lightning ``.ckpt`` (``state_dict``) or a ``.safetensors`` file; the LightningModule's
    ``model.`` prefix is stripped, keys outside it (other modules of the training wrapper) are left out."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt.get("state_dict", ckpt)
    if any(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return state


def load_resunetk(path: str | Path, **kwargs) -> ResUNetK:
    """An official ResUNetK checkpoint (or one of ``ResUNetK(**kwargs)``), loaded strictly, in eval mode."""
    model = ResUNetK(**kwargs)
    try:
        model.load_state_dict(read_state_dict(path), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not hold ResUNetK weights in the official layout: {err}") from err
    return model.eval()
