"""OpenL3 audio embedding (Cramer et al., ICASSP 2019) re-implemented after the official Keras code (``marl/openl3``
0.4.2, ``models.py`` and ``core.py``, as described in ../shared/reference/openl3/README.md), loading its HDF5 weights.

Front-end (Kapre 0.3.5, ``frontend="kapre"``), per 1-s window of 48000 samples at 48 kHz:
- mel128 / mel256: ``tf.signal.stft`` 2048/242 with a periodic Hann window, **no centering**, zeros appended so that
  ``T = ceil(48000 / 242) = 199`` frames; magnitude ``|X|`` (not power); Slaney mel filterbank (``norm='slaney'``,
  0-24 kHz) built here in numpy as librosa builds it;
- linear: STFT 512/242 without end padding (197 frames, 257 bins), magnitude;
- dB as openl3's ``kapre_v0_1_4_magnitude_to_decibel``: ``10 log10(max(x, 1e-10))`` minus the maximum of the window
  over time *and* frequency, floored at -80 dB. Spectrograms are ``[N, 1, F, T]`` (Keras H = frequency, W = time).
Network: BatchNorm on the input, blocks 1-3 ``conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> maxpool 2x2``, block 4
``conv3x3 -> BN -> ReLU -> conv3x3`` (``audio_embedding_layer``: no BN, no ReLU). Every BatchNorm uses the Keras
epsilon 1e-3 and always its moving statistics. Embedding: max pooling into 1 (512-d) or 4x3 (6144-d) cells, flattened
in Keras' NHWC order (feature ``(h * Wo + w) * C + c``).
Framing as ``openl3.get_audio_embedding``: resampling to 48 kHz (resampy ``kaiser_best``), 24000 zeros prepended when
``center``, zeros appended up to a whole number of hops, 1-s windows every ``hop_size`` seconds, each window through
the model on its own. Frames of the encoder protocol are these per-window embeddings.

Weights (``openl3_audio_<repr>_<content>.h5``, gzipped in the repository's ``models`` branch) are Keras 2
``save_weights`` files. Keras' ``load_weights`` matches the layers that have weights **by order**, not by name (the
auto-generated names differ between sessions and versions), and so does :func:`load_keras_h5`:

Keras layers with weights, in file order -> torch names (the Keras names are those of a fresh session):
   1  batch_normalization     -> bn0            gamma, beta, moving_mean, moving_variance
                                                -> weight, bias, running_mean, running_var
   2  conv2d                  -> block1.conv1   kernel [3,3,in,out] -> weight [out,in,3,3]; bias -> bias
   3  batch_normalization_1   -> block1.bn1     (every BN as bn0)
   4  conv2d_1                -> block1.conv2   (every conv as block1.conv1)
   5  batch_normalization_2   -> block1.bn2
   6-9   conv2d_2, batch_normalization_3, conv2d_3, batch_normalization_4 -> block2.{conv1, bn1, conv2, bn2}
  10-13  conv2d_4, batch_normalization_5, conv2d_5, batch_normalization_6 -> block3.{conv1, bn1, conv2, bn2}
  14  conv2d_6                -> block4.conv1
  15  batch_normalization_7   -> block4.bn1
  16  audio_embedding_layer   -> block4.conv2   (there is no block4.bn2)
Weightless layers (input, melspectrogram, activation, max_pooling2d) are skipped, as Keras skips them.

The weights do not tell which ``input_repr`` they were trained for (the shapes are the same for all three), so pass
the matching ``input_repr``; a file named like the official ones is checked against it.
Licence: MIT (the marl/openl3 repository, which also distributes the weights).
"""

from __future__ import annotations

import gzip
import io
import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.encoders.aisfx import resample_kaiser_best
from asdzoo.encoders.base import Encoder, per_length

TARGET_SR = 48000  # openl3 core.TARGET_SR
WINDOW = TARGET_SR  # one 1-s window per model input
STFT_HOP = 242
BN_EPS = 1e-3  # Keras BatchNormalization default (PyTorch's is 1e-5)
AMIN, DYNAMIC_RANGE = 1e-10, 80.0  # kapre_v0_1_4_magnitude_to_decibel
INPUT_REPRS = ("mel128", "mel256", "linear")
# (n_fft, n_mels or None, pad_end) per input representation (openl3 models.py, per the README)
FRONTENDS = {"mel128": (2048, 128, True), "mel256": (2048, 256, True), "linear": (512, None, False)}
# Embedding pooling cells (frequency, time): pools of (16,24)/(32,24) give one cell, (4,8)/(8,8) give 4x3 cells
EMBEDDING_CELLS = {512: (1, 1), 6144: (4, 3)}
OFFICIAL_CHANNELS = (64, 128, 256, 512)
WINDOW_CHUNK = 16  # windows per network call (openl3's batch_size only chunks the work too)
SLANEY_HZ_PER_MEL = 200.0 / 3
# the mel value at 1 kHz computed as librosa does, 1000 / (200/3) = 14.999999999999998 (not 15), so that the band
# edges round alike
SLANEY_MEL_1KHZ = 1000.0 / SLANEY_HZ_PER_MEL
SLANEY_LOGSTEP = np.log(6.4) / 27.0
_OFFICIAL_NAME = re.compile(r"openl3_audio_(mel128|mel256|linear)_(music|env)")


# -- front-end -------------------------------------------------------------------------------------


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic (27 mels per factor 6.4) above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = SLANEY_MEL_1KHZ + np.log(np.maximum(hz, 1e-12) / 1000.0) / SLANEY_LOGSTEP
    return np.where(hz >= 1000.0, log_part, hz / SLANEY_HZ_PER_MEL)


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    return np.where(
        mel >= SLANEY_MEL_1KHZ, 1000.0 * np.exp(SLANEY_LOGSTEP * (mel - SLANEY_MEL_1KHZ)), SLANEY_HZ_PER_MEL * mel
    )


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``[n_mels, 1 + n_fft // 2]`` float32 triangles on the Slaney scale with area normalisation (``norm='slaney'``).

    Rounded as librosa rounds (Kapre builds its matrix with ``librosa.filters.mel``): the triangles are computed in
    float64 and stored in float32, then scaled in place by the float64 area factors ``2 / (f[i+2] - f[i])``.
    """
    fmax = sr / 2.0 if fmax is None else fmax
    fft_hz = np.arange(1 + n_fft // 2) * (1.0 / (n_fft * (1.0 / sr)))  # bin frequencies as np.fft.rfftfreq rounds
    edges = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    widths = np.diff(edges)
    offsets = edges[:, None] - fft_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


class KapreFrontEnd(nn.Module):
    """1-s windows ``[N, 48000]`` at 48 kHz -> dB spectrograms ``[N, 1, F, T]``, as openl3's Kapre layers do."""

    def __init__(self, input_repr: str = "mel256"):
        super().__init__()
        self.n_fft, n_mels, self.pad_end = FRONTENDS[input_repr]
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        fb = slaney_mel_filterbank(TARGET_SR, self.n_fft, n_mels) if n_mels else np.zeros((0, 0), np.float32)
        self.register_buffer("melfb", torch.from_numpy(fb), persistent=False)

    def magnitude(self, windows: torch.Tensor) -> torch.Tensor:
        """``|STFT|`` ``[N, bins, T]``; ``pad_end`` appends zeros up to ``(ceil(S / hop) - 1) * hop + n_fft`` samples
        (``tf.signal.stft(pad_end=True)``), otherwise only whole frames are kept."""
        if self.pad_end:
            frames = math.ceil(windows.shape[-1] / STFT_HOP)
            windows = F.pad(windows, (0, (frames - 1) * STFT_HOP + self.n_fft - windows.shape[-1]))
        spec = torch.stft(
            windows, self.n_fft, STFT_HOP, window=self.window, center=False, return_complex=True, onesided=True
        )
        return spec.abs()

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        spec = self.magnitude(windows)
        if self.melfb.numel():
            spec = torch.matmul(self.melfb, spec)
        db = 10.0 * torch.log10(spec.clamp(min=AMIN))
        db = db - db.amax(dim=(-2, -1), keepdim=True)  # the maximum of each window over frequency and time
        return db.clamp(min=-DYNAMIC_RANGE)[:, None]


# -- network ---------------------------------------------------------------------------------------


class KerasBatchNorm(nn.Module):
    """Keras ``BatchNormalization`` at inference: ``(x - moving_mean) / sqrt(moving_variance + 1e-3) * gamma + beta``.

    Always the moving statistics (the encoder is a fixed feature extractor, also when fine-tuned), and exactly the
    four tensors Keras stores, so ``state_dict`` keys are the canonical names.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, BN_EPS)


class Block(nn.Module):
    """``conv3x3 -> BN -> ReLU -> conv3x3 [-> BN -> ReLU -> maxpool 2x2]``; the last block stops after ``conv2``."""

    def __init__(self, cin: int, cout: int, last: bool = False):
        super().__init__()
        self.last = last
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = KerasBatchNorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if not last:
            self.bn2 = KerasBatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(F.relu(self.bn1(self.conv1(x))))
        if self.last:
            return x
        return F.max_pool2d(F.relu(self.bn2(x)), 2)  # 'valid' pooling: odd sizes are floored


class OpenL3Net(nn.Module):
    """dB spectrogram ``[N, 1, F, T]`` -> block outputs; parameter names are the README's canonical names."""

    def __init__(self, channels: tuple[int, ...] = OFFICIAL_CHANNELS):
        super().__init__()
        self.bn0 = KerasBatchNorm(1)
        widths = (1, *channels)
        for b in range(1, 5):
            setattr(self, f"block{b}", Block(widths[b - 1], widths[b], last=b == 4))

    def forward(self, spec: torch.Tensor, layer: int = 4) -> torch.Tensor:
        """Output of block ``layer`` (1-4; block 4 = ``audio_embedding_layer``), ``[N, C, H, W]``."""
        x = self.bn0(spec)
        for b in range(1, layer + 1):
            x = getattr(self, f"block{b}")(x)
        return x


def pool_embedding(fmap: torch.Tensor, embedding_size: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, cells * C]``: max over each cell (``MaxPooling2D(P, padding='same')``, whose pools
    divide the final map exactly), flattened channel-last as Keras' ``Flatten`` of an NHWC tensor."""
    cells = F.adaptive_max_pool2d(fmap, EMBEDDING_CELLS[embedding_size])
    return cells.permute(0, 2, 3, 1).reshape(fmap.shape[0], -1)


# -- framing ---------------------------------------------------------------------------------------


def frame_audio(audio: torch.Tensor, hop_size: float = 0.1, center: bool = True) -> torch.Tensor:
    """48 kHz ``[..., S]`` -> 1-s windows ``[..., n, 48000]`` as openl3 ``core._preprocess_audio_batch``:
    ``center`` prepends 24000 zeros; short audio is padded to one window, longer audio to a whole number of hops."""
    hop = int(hop_size * TARGET_SR)
    if center:
        audio = F.pad(audio, (int(WINDOW / 2), 0))
    length = audio.shape[-1]
    if length < WINDOW:
        extra = WINDOW - length
    else:
        extra = -(-(length - WINDOW) // hop) * hop - (length - WINDOW)
    return F.pad(audio, (0, extra)).unfold(-1, WINDOW, hop)


def frame_timestamps(n_frames: int, hop_size: float) -> torch.Tensor:
    """Window start times in seconds, ``np.arange(n) * hop_size`` in float64 (openl3 ``get_audio_embedding``)."""
    return torch.arange(n_frames, dtype=torch.float64) * hop_size


# -- weights ---------------------------------------------------------------------------------------

CANONICAL_LAYERS = ["bn0"] + [
    f"block{b}.{name}" for b in range(1, 5) for name in ("conv1", "bn1", "conv2", "bn2") if (b, name) != (4, "bn2")
]
# Keras stores a layer's weights in this order; the torch names they become
BN_WEIGHTS = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)
CONV_WEIGHTS = (("kernel", "weight"), ("bias", "bias"))


def canonical_shapes(channels: tuple[int, ...] = OFFICIAL_CHANNELS) -> dict[str, tuple[int, ...]]:
    """PyTorch-layout shape of every weight, keyed by canonical name."""
    return {k: tuple(v.shape) for k, v in OpenL3Net(channels).state_dict().items()}


def _h5_strings(attrs, name: str) -> list[str]:
    """A list-of-strings attribute (h5py returns fixed-length bytes or str, depending on how it was written)."""
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in attrs.get(name, [])]


def _open_h5(path: Path):
    import h5py

    try:
        if path.suffix == ".gz":
            return h5py.File(io.BytesIO(gzip.decompress(path.read_bytes())), "r")
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: cannot be read as HDF5 ({err})") from None


def _keras_layer_weights(path: Path) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """``[(layer, [(weight_name, array), ...]), ...]`` for the layers that have weights, in the file's order.

    Keras 2 layout: root attr ``layer_names``, one group per layer with attr ``weight_names``, datasets at
    ``<layer>/<weight_name>``; files of ``model.save()`` hold the same under ``model_weights``."""
    with _open_h5(path) as f:
        root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path}: not a Keras HDF5 weight file (no 'layer_names' attribute)")
        layers = []
        for layer in _h5_strings(root.attrs, "layer_names"):
            if layer not in root:
                raise ValueError(f"{path}: layer {layer!r} is listed in 'layer_names' but has no group")
            names = _h5_strings(root[layer].attrs, "weight_names")
            if names:
                layers.append((layer, [(n, np.asarray(root[layer][n])) for n in names]))
    return layers


def _convert_layer(path: Path, torch_name: str, layer: str, weights: list[tuple[str, np.ndarray]]) -> dict:
    """One Keras layer -> canonical tensors (conv kernels ``[3,3,in,out]`` -> ``[out,in,3,3]``)."""
    is_conv = ".conv" in torch_name
    table = CONV_WEIGHTS if is_conv else BN_WEIGHTS
    if len(weights) != len(table):
        raise ValueError(
            f"{path}: Keras layer {layer!r} ({torch_name}) has {len(weights)} weights, expected {len(table)}"
        )
    out = {}
    for (keras_name, value), (expected, key) in zip(weights, table):
        short = keras_name.rsplit("/", 1)[-1].split(":")[0]
        if short != expected:
            raise ValueError(f"{path}: Keras weight {keras_name!r} of layer {layer!r} found where {expected} belongs")
        out[f"{torch_name}.{key}"] = torch.from_numpy(value.transpose(3, 2, 0, 1) if value.ndim == 4 else value)
    return out


def load_keras_h5(path: str | Path, channels: tuple[int, ...] | None = OFFICIAL_CHANNELS) -> dict[str, torch.Tensor]:
    """An official OpenL3 Keras weight file (``.h5`` or ``.h5.gz``) -> canonical state dict, matched by layer order
    like Keras' ``load_weights``; shapes are checked against the network with ``channels`` (None: the widths of the
    file's own conv layers, which must then fit together)."""
    path = Path(path)
    layers = _keras_layer_weights(path)
    if len(layers) != len(CANONICAL_LAYERS):
        raise ValueError(f"{path}: {len(layers)} Keras layers have weights, OpenL3 has {len(CANONICAL_LAYERS)}")
    state = {}
    for torch_name, (layer, weights) in zip(CANONICAL_LAYERS, layers):
        state.update(_convert_layer(path, torch_name, layer, weights))
    for key, shape in canonical_shapes(channels or conv_widths(state)).items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {shape}")
    return {k: v.float().contiguous() for k, v in state.items()}


def conv_widths(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The four block widths of a canonical state dict (output channels of each block's first conv)."""
    return tuple(state[f"block{b}.conv1.weight"].shape[0] for b in range(1, 5))


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write converted weights (canonical names) so that ``OpenL3(checkpoint=path)`` reads them without h5py."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def load_openl3_state(
    path: str | Path, channels: tuple[int, ...] | None = OFFICIAL_CHANNELS
) -> dict[str, torch.Tensor]:
    """Weights from an official ``.h5`` / ``.h5.gz`` file or a ``.safetensors`` file with canonical names."""
    path = Path(path)
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.name.endswith((".h5", ".h5.gz", ".hdf5")):
        return load_keras_h5(path, channels)
    raise ValueError(f"{path}: OpenL3 weights must be a Keras .h5 / .h5.gz file or a .safetensors file")


def _check_official_name(path: str, input_repr: str, content_type: str) -> None:
    """Official file names carry repr and content type; a mismatch would silently give wrong embeddings."""
    m = _OFFICIAL_NAME.search(Path(path).name)
    if m and (m[1], m[2]) != (input_repr, content_type):
        raise ValueError(
            f"{path}: weights for input_repr={m[1]!r}, content_type={m[2]!r}, "
            f"but the encoder was built with {input_repr!r}, {content_type!r}"
        )


# -- encoder ---------------------------------------------------------------------------------------


class OpenL3(Encoder):
    """OpenL3 embeddings of 1-s windows, one frame per window (``[B, n_windows, embed_dim]``).

    ``hop_size`` is in seconds; the default 0.1 s is the official default of ``get_audio_embedding``, as is
    ``center=True``. ``content_type`` ("music" / "env") only names the official weight file that belongs to the
    encoder (checked against the checkpoint's name). ``channels`` exists for tests: only the official
    ``(64, 128, 256, 512)`` matches the real weights; None (the default) reads them from the checkpoint (official
    widths without one), so small stand-in files load through the same entry.
    ``layer`` (1-4, None = 4) takes the output of that conv block
    (4 = ``audio_embedding_layer``), adaptively max-pooled into the same cells as the embedding. Input is 16 kHz audio,
    resampled to 48 kHz inside with resampy's ``kaiser_best`` filter as openl3 does.
    """

    def __init__(
        self,
        input_repr: str = "mel256",
        embedding_size: int = 6144,
        content_type: str = "music",
        hop_size: float = 0.1,
        center: bool = True,
        checkpoint: str | None = None,
        channels: tuple[int, ...] | None = None,
        layer: int | None = None,
    ):
        super().__init__()
        state = None
        if checkpoint is not None:
            _check_official_name(str(checkpoint), input_repr, content_type)
            state = load_openl3_state(checkpoint, channels)
            channels = channels or conv_widths(state)
        channels = tuple(channels or OFFICIAL_CHANNELS)
        if input_repr not in INPUT_REPRS:
            raise ValueError(f"input_repr must be one of {INPUT_REPRS}, got {input_repr!r}")
        if embedding_size not in EMBEDDING_CELLS:
            raise ValueError(f"embedding_size must be 512 or 6144, got {embedding_size}")
        if content_type not in ("music", "env"):
            raise ValueError(f"content_type must be 'music' or 'env', got {content_type!r}")
        if len(channels) != 4 or int(hop_size * TARGET_SR) < 1:
            raise ValueError("OpenL3 needs four channel widths and hop_size >= 1/48000 s")
        if layer is not None and not 1 <= layer <= 4:
            raise ValueError(f"OpenL3 layer must be 1-4, got {layer}")
        self.input_repr, self.embedding_size, self.hop_size, self.center = input_repr, embedding_size, hop_size, center
        self.layer = layer or 4
        self.sample_rate = 16000  # protocol input rate; resampled to 48 kHz inside
        cells = math.prod(EMBEDDING_CELLS[embedding_size])
        self.embed_dim = cells * channels[self.layer - 1]
        self.channels = tuple(channels)
        self.frontend = KapreFrontEnd(input_repr)
        self.net = OpenL3Net(self.channels)
        if state is not None:
            self.load_state(checkpoint, state)

    def load_weights(self, path: str | Path) -> None:
        """Official ``.h5`` / ``.h5.gz`` or canonical ``.safetensors`` weights; errors name the file in one line."""
        self.load_state(path, load_openl3_state(path, self.channels))

    def load_state(self, path: str | Path, state: dict[str, torch.Tensor]) -> None:
        expected = self.net.state_dict()
        odd = sorted(set(expected) ^ set(state))
        if odd:
            raise ValueError(f"{path}: OpenL3 weights missing or unexpected: {', '.join(odd[:4])}")
        for key, value in state.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
        self.net.load_state_dict(state, strict=True)

    def embed_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """1-s windows at 48 kHz ``[N, 48000]`` -> embeddings ``[N, embed_dim]``, each window on its own."""
        outs = [
            pool_embedding(self.net(self.frontend(chunk), self.layer), self.embedding_size)
            for chunk in windows.split(WINDOW_CHUNK)
        ]
        return torch.cat(outs) if outs else windows.new_zeros(0, self.embed_dim)

    def embed_48k(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mono 48 kHz audio ``[S]`` -> (embeddings ``[n, embed_dim]``, timestamps ``[n]`` in s, float64), as
        ``openl3.get_audio_embedding(audio, 48000, center=self.center, hop_size=self.hop_size)``."""
        windows = frame_audio(audio, self.hop_size, self.center)
        return self.embed_windows(windows), frame_timestamps(windows.shape[0], self.hop_size)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        def run(w: torch.Tensor) -> torch.Tensor:
            windows = frame_audio(resample_kaiser_best(w, self.sample_rate, TARGET_SR), self.hop_size, self.center)
            b, n = windows.shape[:2]
            return self.embed_windows(windows.reshape(b * n, WINDOW)).reshape(b, n, -1)

        return per_length(run, wave, lengths)
