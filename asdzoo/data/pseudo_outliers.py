"""Pseudo-outliers for the pOE loss of paper 004 §2.5 (eq. 9). The paper does not say how its "auxiliary
pseudo-outliers" are made; these are our generators, chosen to mimic the fault types DCASE machines show.

* ``other_machine``: normal clips of other machines (:class:`OtherMachineOutliers`).
* spectrally perturbed normals of the same machine (:class:`SpectralPerturbation`), one of
  ``speed`` (speed/pitch change), ``harmonics`` (added harmonics of the strongest peak), ``notch`` / ``peak``
  (a band cut or boosted) and ``impacts`` (short decaying clicks). ``spectral`` in a mix picks one uniformly.

All work on waveforms ``[B, C, S]`` at 16 kHz and keep length and channel count. Every output is RMS-matched to the
clip it was made from, so loudness is never a cue. Every random draw comes from a seeded CPU ``torch.Generator``, so
a seed gives the same parameters on any device (outputs agree up to that device's FFT rounding).
"""

from __future__ import annotations

import math

import torch

SAMPLE_RATE = 16000
KINDS = ("speed", "harmonics", "notch", "peak", "impacts")
MIX_NAMES = ("other_machine", "spectral", *KINDS)
SPEED_RANGES = ((0.85, 0.95), (1.05, 1.15))
HARMONIC_ORDERS = (2, 3)
HARMONIC_REL_RMS = (0.1, 0.3)  # each harmonic's RMS relative to the clip's: -20 to -10 dB, a clearly visible line
NOTCH_DB, NOTCH_Q = (-40.0, -20.0), (1.0, 4.0)
PEAK_DB, PEAK_Q, PEAK_HZ = (10.0, 20.0), (2.0, 8.0), (100.0, 6000.0)
BAND_HZ = (50.0, 7000.0)  # band centres stay inside the useful range of a 16 kHz recording
IMPACTS, IMPACT_TAU_S, IMPACT_HZ, IMPACT_PEAK = (1, 5), (0.001, 0.008), (500.0, 5000.0), (4.0, 10.0)
EPS = 1e-12


def rms_match(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` rescaled to the RMS of ``ref`` (over all channels and samples of one clip ``[C, S]``)."""
    return x * (ref.pow(2).mean().sqrt() / x.pow(2).mean().sqrt().clamp(min=EPS))


def _fit_length(x: torch.Tensor, length: int, start: int = 0) -> torch.Tensor:
    """``[C, L] -> [C, length]``: a window from ``start`` when long enough, else the clip repeated (machine sounds
    are mostly stationary, and repetition keeps the spectrum where zero padding would add silence as a cue)."""
    if x.shape[-1] >= length + start:
        return x[..., start : start + length]
    return x.repeat(1, math.ceil(length / x.shape[-1]))[..., :length]


def speed_shift(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """Play ``clip [C, S]`` ``factor`` times faster: every frequency (and the tempo) scales by ``factor``.

    Band-limited FFT resampling to ``L = round(S / factor)`` samples (truncating or zero-padding the spectrum),
    then cropped (``L > S``) or repeated (``L < S``) back to ``S``."""
    s = clip.shape[-1]
    n = max(2, round(s / factor))
    spec = torch.fft.rfft(clip.float(), dim=-1)
    bins = min(spec.shape[-1], n // 2 + 1)
    out = spec.new_zeros(*spec.shape[:-1], n // 2 + 1)
    out[..., :bins] = spec[..., :bins]
    y = torch.fft.irfft(out, n=n, dim=-1)
    return rms_match(_fit_length(y, s), clip).to(clip.dtype)


def strongest_peak_hz(clip: torch.Tensor, sample_rate: int = SAMPLE_RATE, min_hz: float = 20.0) -> float:
    """Frequency of the largest magnitude bin of the channel-mean spectrum above ``min_hz``."""
    mag = torch.fft.rfft(clip.float().mean(0)).abs()
    hz_per_bin = sample_rate / clip.shape[-1]
    lo = math.ceil(min_hz / hz_per_bin)
    return float(lo + mag[lo:].argmax()) * hz_per_bin


def add_harmonics(
    clip: torch.Tensor, rel_rms: list[float], phases: list[float], sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Add sinusoids at 2·f0, 3·f0, ... (one per entry of ``rel_rms``) of the strongest peak ``f0``, each with
    RMS ``rel_rms[k]`` times the clip's, the same on every channel (a vibration harmonic reaches all microphones).
    Orders above Nyquist are skipped."""
    f0 = strongest_peak_hz(clip, sample_rate)
    x = clip.float()
    t = torch.arange(x.shape[-1], device=x.device, dtype=torch.float64) / sample_rate
    rms = x.pow(2).mean().sqrt()
    out = x.clone()
    for order, (g, phi) in enumerate(zip(rel_rms, phases), start=2):
        if order * f0 < sample_rate / 2:
            tone = torch.sin(2 * math.pi * order * f0 * t + phi).float()
            out = out + (g * math.sqrt(2) * rms) * tone
    return rms_match(out, x).to(clip.dtype)


def band_gain(
    clip: torch.Tensor, centre_hz: float, q: float, gain_db: float, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """FFT-domain notch (``gain_db < 0``) or peak (``> 0``) filter: a Gaussian gain profile in dB,
    ``gain_db · exp(-(f − fc)² / (2σ²))`` with ``σ = fc / (2q)`` (bandwidth ``fc / q`` between the ±σ points)."""
    x = clip.float()
    spec = torch.fft.rfft(x, dim=-1)
    f = torch.fft.rfftfreq(x.shape[-1], 1 / sample_rate).to(x.device)
    sigma = centre_hz / (2 * q)
    db = gain_db * torch.exp(-0.5 * ((f - centre_hz) / sigma) ** 2)
    y = torch.fft.irfft(spec * 10 ** (db / 20), n=x.shape[-1], dim=-1)
    return rms_match(y, x).to(clip.dtype)


def add_impacts(
    clip: torch.Tensor,
    onsets: list[int],
    taus_s: list[float],
    freqs_hz: list[float],
    peaks: list[float],
    sample_rate: int = SAMPLE_RATE,
) -> torch.Tensor:
    """Add short decaying clicks ``peak·RMS·exp(−t/τ)·sin(2πft)`` (5τ long) at sample ``onsets``, on all
    channels: the knocks of a loose or cracked part. ``peaks`` are relative to the clip's RMS."""
    x = clip.float()
    rms = x.pow(2).mean().sqrt()
    out = x.clone()
    for onset, tau, f, peak in zip(onsets, taus_s, freqs_hz, peaks):
        n = min(math.ceil(5 * tau * sample_rate), x.shape[-1] - onset)
        t = torch.arange(n, device=x.device, dtype=torch.float32) / sample_rate
        out[..., onset : onset + n] += peak * rms * torch.exp(-t / tau) * torch.sin(2 * math.pi * f * t)
    return rms_match(out, x).to(clip.dtype)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(_uniform(g, math.log(lo), math.log(hi)))


class SpectralPerturbation:
    """Spectrally perturbed normals of the same machine: ``__call__(wave [B, C, S]) -> [B, C, S]`` applies one
    perturbation per clip, drawn uniformly from ``kinds``; :meth:`perturb` applies a named one. Parameters
    (module constants): speed factor ``U(0.85, 0.95) ∪ U(1.05, 1.15)``; harmonics 2f0, 3f0 at -20..-10 dB of the
    clip RMS; notch -40..-20 dB, Q 1-4, centre drawn in 50 Hz-7 kHz with probability ∝ the clip's power (so it
    removes something audible); peak +10..+20 dB, Q 2-8, centre log-uniform 100 Hz-6 kHz; 1-5 impacts, τ 1-8 ms,
    500 Hz-5 kHz log-uniform, peak 4-10 × clip RMS."""

    def __init__(self, kinds: tuple[str, ...] = KINDS, sample_rate: int = SAMPLE_RATE, seed: int = 0):
        unknown = set(kinds) - set(KINDS)
        if not kinds or unknown:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds}")
        self.kinds, self.sample_rate, self.g = tuple(kinds), sample_rate, _generator(seed)

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        _check_wave(wave)
        picks = torch.randint(len(self.kinds), (len(wave),), generator=self.g).tolist()
        return torch.stack([self.perturb(clip, self.kinds[k]) for clip, k in zip(wave, picks)])

    def perturb(self, clip: torch.Tensor, kind: str) -> torch.Tensor:
        """One perturbation ``kind`` of ``clip [C, S]`` with freshly drawn parameters."""
        g, sr = self.g, self.sample_rate
        if kind == "speed":
            lo, hi = SPEED_RANGES[int(torch.randint(2, (), generator=g))]
            return speed_shift(clip, _uniform(g, lo, hi))
        if kind == "harmonics":
            gains = [_uniform(g, *HARMONIC_REL_RMS) for _ in HARMONIC_ORDERS]
            return add_harmonics(clip, gains, [_uniform(g, 0, 2 * math.pi) for _ in HARMONIC_ORDERS], sr)
        if kind == "notch":
            return band_gain(clip, self._power_weighted_hz(clip), _uniform(g, *NOTCH_Q), _uniform(g, *NOTCH_DB), sr)
        if kind == "peak":
            return band_gain(clip, _log_uniform(g, *PEAK_HZ), _uniform(g, *PEAK_Q), _uniform(g, *PEAK_DB), sr)
        if kind == "impacts":
            k = int(torch.randint(IMPACTS[0], IMPACTS[1] + 1, (), generator=g))
            onsets = torch.randint(clip.shape[-1], (k,), generator=g).tolist()
            taus = [_uniform(g, *IMPACT_TAU_S) for _ in range(k)]
            freqs = [_log_uniform(g, *IMPACT_HZ) for _ in range(k)]
            return add_impacts(clip, onsets, taus, freqs, [_uniform(g, *IMPACT_PEAK) for _ in range(k)], sr)
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {KINDS}")

    def _power_weighted_hz(self, clip: torch.Tensor) -> float:
        """A frequency in ``BAND_HZ`` drawn with probability proportional to the clip's power spectrum."""
        power = torch.fft.rfft(clip.float().mean(0)).abs().pow(2).cpu()
        f = torch.fft.rfftfreq(clip.shape[-1], 1 / self.sample_rate)
        power = torch.where((f >= BAND_HZ[0]) & (f <= BAND_HZ[1]), power, torch.zeros_like(power))
        if float(power.sum()) <= 0:  # silent clip: any band
            return _log_uniform(self.g, *BAND_HZ)
        return float(f[torch.multinomial(power.double(), 1, generator=self.g)])


class OtherMachineOutliers:
    """Normal clips of other machines as pseudo-outliers: ``__call__(pool [N, C', S'], ref [n, C, S]) -> [n, C, S]``
    draws one pool clip per reference clip, takes a random window of length ``S`` (or repeats a shorter clip),
    matches the channel count (a mono pool clip is copied to every channel, others are averaged then copied) and
    RMS-matches it to its reference clip."""

    def __init__(self, seed: int = 0):
        self.g = _generator(seed)

    def __call__(self, pool: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        _check_wave(pool)
        _check_wave(ref)
        if len(pool) == 0:
            raise ValueError("other_machine outliers need a non-empty pool of other machines' clips")
        picks = torch.randint(len(pool), (len(ref),), generator=self.g).tolist()
        return torch.stack([self._one(pool[i].to(r.device), r) for i, r in zip(picks, ref)])

    def _one(self, clip: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        spare = clip.shape[-1] - ref.shape[-1]
        start = int(torch.randint(spare + 1, (), generator=self.g)) if spare > 0 else 0
        x = _fit_length(clip, ref.shape[-1], start)
        if x.shape[0] != ref.shape[0]:
            x = x.mean(0, keepdim=True).expand(ref.shape[0], -1)
        return rms_match(x.float(), ref.float()).to(ref.dtype)


class PseudoOutlierMix:
    """The configurable mix: ``weights`` maps names in ``MIX_NAMES`` (``other_machine``, ``spectral`` = any
    perturbation, or one perturbation by name) to non-negative weights, normalised to probabilities.
    ``make(normal_wave [B, C, S], other_pool [N, C, S] | None, n) -> [n, C, S]``: outlier ``i`` is made from normal
    clip ``i % B`` (whose RMS it takes), its generator drawn by weight. Successive calls continue one seeded stream."""

    def __init__(self, weights: dict[str, float], seed: int = 0):
        unknown = set(weights) - set(MIX_NAMES)
        if unknown:
            raise ValueError(f"unknown pseudo-outlier kinds {sorted(unknown)}; expected names from {MIX_NAMES}")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"pseudo-outlier weights must be non-negative with a positive sum, got {weights}")
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.g = _generator(seed)
        self.spectral = SpectralPerturbation(seed=seed + 1)
        self.other = OtherMachineOutliers(seed=seed + 2)

    def make(self, normal_wave: torch.Tensor, other_pool: torch.Tensor | None, n: int) -> torch.Tensor:
        _check_wave(normal_wave)
        if "other_machine" in self.weights and other_pool is None:
            raise ValueError("the pseudo-outlier mix has other_machine > 0 but no pool of other machines' clips")
        if n <= 0:
            return normal_wave.new_zeros(0, *normal_wave.shape[1:])
        names = list(self.weights)
        probs = torch.tensor([self.weights[k] for k in names], dtype=torch.float64)
        picks = torch.multinomial(probs, n, replacement=True, generator=self.g).tolist()
        out = []
        for i, k in enumerate(picks):
            ref, name = normal_wave[i % len(normal_wave)], names[k]
            if name == "other_machine":
                out.append(self.other(other_pool, ref[None])[0])
            elif name == "spectral":
                out.append(self.spectral(ref[None])[0])
            else:
                out.append(self.spectral.perturb(ref, name))
        return torch.stack(out)


def _check_wave(wave: torch.Tensor) -> None:
    if wave.dim() != 3:
        raise ValueError(f"expected waveforms [B, C, S], got shape {tuple(wave.shape)}")
