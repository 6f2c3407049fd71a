"""The frozen Qwen2-Audio audio encoder (the audio tower of ``Qwen/Qwen2-Audio-7B``) as a distillation teacher.

Only the encoder is ever loaded: the repository's ``model.safetensors.index.json`` says which shards hold
``audio_tower.*`` tensors, and only those shards are fetched and only those tensors read (the language model's
~7B parameters are never downloaded or built). The encoder is transformers' ``Qwen2AudioEncoder``; its input is the
Whisper log-mel of ``WhisperFeatureExtractor`` (16 kHz, 128 bins, 25 ms / 10 ms), padded to the fixed
``2 * max_source_positions`` frames the encoder accepts (30 s at full size), with the padded positions masked as
``Qwen2AudioModel`` masks them. Outputs: one 1280-d token per 40 ms, only those covering the clip are returned.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from hashlib import sha1
from pathlib import Path

import torch
from torch import nn

from asdzoo.audio.features import resample

QWEN2_AUDIO_HUB_ID = "Qwen/Qwen2-Audio-7B"
SAMPLE_RATE = 16000
HOP = 160  # WhisperFeatureExtractor: 10 ms hop at 16 kHz
ENCODER_PREFIXES = ("audio_tower.", "model.audio_tower.")  # the release's key names; transformers >= 5 writes 'model.'
INDEX = "model.safetensors.index.json"


def _encoder_config(config: dict):
    from transformers import Qwen2AudioEncoderConfig

    audio = config.get("audio_config", config)
    audio = {k: v for k, v in audio.items() if k not in ("model_type", "transformers_version", "architectures")}
    return Qwen2AudioEncoderConfig(**audio)


class _Repository:
    """A local folder or a Hub repo: ``path(name)`` gives a local file, fetching it from the Hub when needed."""

    def __init__(self, source: str):
        self.source, self.local = source, Path(source).is_dir()

    def path(self, name: str) -> Path:
        if self.local:
            path = Path(self.source) / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing (expected a Qwen2-Audio checkpoint folder)")
            return path
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.source, name))

    def has(self, name: str) -> bool:
        if self.local:
            return (Path(self.source) / name).is_file()
        from huggingface_hub import file_exists

        return file_exists(self.source, name)


def _encoder_keys(names, where: str) -> dict[str, str]:
    """Checkpoint key -> encoder key for every audio-tower tensor of ``names``."""
    keys = {}
    for name in names:
        for prefix in ENCODER_PREFIXES:
            if name.startswith(prefix):
                keys[name] = name[len(prefix) :]
    if not keys:
        raise ValueError(f"{where}: no audio_tower.* tensors (not a Qwen2-Audio checkpoint)")
    return keys


def load_qwen2_audio_encoder(source: str = QWEN2_AUDIO_HUB_ID):
    """``Qwen2AudioEncoder`` with the weights of a Qwen2-Audio checkpoint (Hub id or local folder), strictly;
    only the shards that hold encoder tensors are read (and, from the Hub, downloaded)."""
    from safetensors import safe_open
    from transformers import Qwen2AudioEncoder

    repo = _Repository(source)
    config = _encoder_config(json.loads(repo.path("config.json").read_text()))
    if repo.has(INDEX):
        weight_map = json.loads(repo.path(INDEX).read_text())["weight_map"]
        keys = _encoder_keys(weight_map, f"{source}/{INDEX}")
        shards = sorted({weight_map[k] for k in keys})
    else:
        shards, keys = ["model.safetensors"], None
    state = {}
    for shard in shards:
        path = repo.path(shard)
        with safe_open(str(path), "pt") as f:
            names = _encoder_keys(f.keys(), str(path)) if keys is None else keys
            state.update({new: f.get_tensor(old) for old, new in names.items() if old in f.keys()})  # noqa: SIM118
    encoder = Qwen2AudioEncoder(config)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{source}: its audio_tower tensors do not fit the encoder of its config ({err})") from None
    return encoder


def random_qwen2_audio_encoder(config: dict, seed: int = 0):
    """A random-weight ``Qwen2AudioEncoder`` of ``config`` (``Qwen2AudioEncoderConfig`` fields), the same for a
    seed: the offline stand-in for tests and benchmarks."""
    from transformers import Qwen2AudioEncoder

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Qwen2AudioEncoder(_encoder_config(config))


class Qwen2AudioTeacher(nn.Module):
    """Frozen encoder + its front-end: ``forward(wave [B, S], sample_rate)`` -> tokens ``[B, T, d_model]`` of the
    clip's own length (at most ``2 * max_source_positions`` mel frames; longer clips are cut there, as the
    processor cuts them)."""

    def __init__(self, encoder):
        super().__init__()
        from transformers import WhisperFeatureExtractor

        self.encoder = encoder.eval().requires_grad_(False)
        cfg = encoder.config
        self.frames = 2 * cfg.max_source_positions
        self.d_model = cfg.d_model
        self.extractor = WhisperFeatureExtractor(
            feature_size=cfg.num_mel_bins, sampling_rate=SAMPLE_RATE, hop_length=HOP, n_fft=400
        )

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: never leaves eval mode (no dropout, fixed outputs for the cache)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` 16 kHz -> Whisper log-mel ``[B, mel, 2 * max_source_positions]``."""
        n = self.frames * HOP
        out = self.extractor(
            list(wave.detach().cpu().float().numpy()),
            sampling_rate=SAMPLE_RATE,
            padding="max_length",
            max_length=n,
            truncation=True,
            return_tensors="pt",
        )
        return out["input_features"].to(wave.device)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        wave = resample(wave, sample_rate, SAMPLE_RATE)
        features = self.log_mel(wave)
        mel = min(wave.shape[-1] // HOP, self.frames)
        conv_len, tokens = self.encoder._get_feat_extract_output_lengths(torch.tensor(mel))
        positions = (self.frames - 2) // 2 + 1
        keep = (torch.arange(positions, device=wave.device) < conv_len).long().expand(len(wave), -1)
        dummy = torch.zeros(len(wave), positions, 1, device=wave.device, dtype=self.encoder.conv1.weight.dtype)
        mask = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=dummy, attention_mask=keep)
        hidden = self.encoder(features, attention_mask=mask).last_hidden_state
        return hidden[:, : max(int(tokens), 1)]  # the tokens that cover the clip, not its padding


class TeacherCache:
    """Teacher outputs keyed by the content of their input (SHA-1 of the float32 samples and their shape): fixed
    validation scenes, or any repeated dry sum, pay for the teacher once. Least recently used entries go first."""

    def __init__(self, max_entries: int = 2048):
        self.max_entries = max_entries
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(wave: torch.Tensor) -> str:
        data = wave.detach().to("cpu", torch.float32).contiguous()
        return sha1(str(tuple(data.shape)).encode() + data.numpy().tobytes()).hexdigest()

    def __call__(self, compute, waves: torch.Tensor) -> torch.Tensor:
        """``compute(waves[missing]) -> [n, ...]`` is run on the rows not cached; returns all rows stacked."""
        keys = [self.key(w) for w in waves]
        missing = [i for i, k in enumerate(keys) if k not in self.entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            for i, out in zip(missing, compute(waves[missing])):
                self.entries[keys[i]] = out.detach().cpu()
        rows = []
        for k in keys:
            self.entries.move_to_end(k)
            rows.append(self.entries[k])
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return torch.stack(rows).to(waves.device)
