"""BEATs (Chen et al., ICML 2023) re-implemented to load the official ``{'cfg', 'model'}`` checkpoints strictly.

Post-LN transformer with deep-norm residual scaling, bucketed relative position bias shared by all layers
(computed once per forward by layer 0) with the GRU-style gate, a weight-normed convolutional positional
embedding (folded into a plain weight at load time), the Kaldi fbank front-end and the official two-step
padding mask (samples -> fbank frames -> tokens). Attention uses ``scaled_dot_product_attention``; the
official code's row-max subtraction before adding the bias is softmax-invariant, so it is not repeated.
Parameter names equal the official ones (``self_attn.q_proj`` ...) so peft LoRA targets them by name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.audio.kaldi import fbank as kaldi_fbank
from asdzoo.encoders.base import Encoder, per_length

FBANK_MEAN, FBANK_STD = 15.41663, 6.55582  # BEATs' fbank normalisation constants


@dataclass
class BEATsConfig:
    """The 26 fields of the official ``BEATsConfig`` (defaults: the iter3 / iter3+ base model)."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 0.6
    layer_norm_first: bool = False
    deep_norm: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.05
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = False
    predictor_dropout: float = 0.0
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: dict) -> BEATsConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in known})


def relative_position_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5-style buckets of (key - query) offsets: exact below num_buckets/4, log-spaced above."""
    rel = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    max_exact = half // 2
    large = (
        max_exact
        + (torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)).long()
    )
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(rel < max_exact, rel, large)


class MultiheadAttention(nn.Module):
    def __init__(self, cfg: BEATsConfig, has_relative_attention_bias: bool):
        super().__init__()
        d, h = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads, self.head_dim = h, d // h
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.has_relative_attention_bias = has_relative_attention_bias
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, h)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, h, 1, 1))

    def compute_bias(self, length: int) -> torch.Tensor:
        buckets = relative_position_buckets(length, length, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets.to(self.relative_attention_bias.weight.device)).permute(2, 0, 1)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        position_bias: torch.Tensor | None,
        scratch: dict | None = None,
    ):
        """``x [B, T, D]``; ``position_bias [H, T, T]`` (computed here if None and this layer owns the table).
        ``scratch`` lends one ``[B, H, T, T]`` buffer to every layer for the gated bias in inference: a fresh
        tensor of that size per layer costs more in page faults than the multiplication itself."""
        b, t, _ = x.shape
        if position_bias is None and self.has_relative_attention_bias:
            position_bias = self.compute_bias(t)
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        bias = None
        if position_bias is not None:
            bias = position_bias[None].to(q.dtype)
            if self.gru_rel_pos:
                gates = torch.sigmoid(self.grep_linear(q).view(b, self.num_heads, t, 2, 4).sum(-1))
                gate_a, gate_b = gates[..., :1], gates[..., 1:]
                gate = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0).to(bias.dtype)
                bias = _multiply_into(gate, bias, scratch)
        if key_padding_mask is not None:
            pad = torch.zeros(b, 1, 1, t, dtype=q.dtype, device=q.device).masked_fill(
                key_padding_mask[:, None, None], float("-inf")
            )
            bias = pad if bias is None else bias + pad
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1)), position_bias


def _multiply_into(gate: torch.Tensor, bias: torch.Tensor, scratch: dict | None) -> torch.Tensor:
    """``gate * bias`` written into a reused buffer when autograd is off (``out=`` ops are not differentiable)."""
    if scratch is None or torch.is_grad_enabled():
        return gate * bias
    shape = torch.broadcast_shapes(gate.shape, bias.shape)
    buf = scratch.get("bias")
    if buf is None or buf.shape != shape or buf.dtype != bias.dtype:
        buf = scratch["bias"] = torch.empty(shape, dtype=bias.dtype, device=bias.device)
    return torch.mul(gate, bias, out=buf)


class EncoderLayer(nn.Module):
    """Post-LN block with deep-norm: ``LN(alpha * x + f(x))``, alpha = (2 N)^(1/4)."""

    def __init__(self, cfg: BEATsConfig, has_relative_attention_bias: bool):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.self_attn = MultiheadAttention(cfg, has_relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0
        if cfg.layer_norm_first:
            raise ValueError("BEATs checkpoints use layer_norm_first=False; pre-LN is not supported")

    def forward(self, x, key_padding_mask, position_bias, scratch=None):
        attn, position_bias = self.self_attn(x, key_padding_mask, position_bias, scratch)
        x = self.self_attn_layer_norm(x * self.alpha + attn)
        x = self.final_layer_norm(x * self.alpha + self.fc2(F.gelu(self.fc1(x))))
        return x, position_bias


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        d = cfg.encoder_embed_dim
        # Official: weight_norm(Conv1d, dim=2) + SamePad + GELU; stored as weight_g / weight_v and folded on load.
        self.pos_conv = nn.Conv1d(d, d, cfg.conv_pos, padding=cfg.conv_pos // 2, groups=cfg.conv_pos_groups)
        self.pos_conv_trim = 1 if cfg.conv_pos % 2 == 0 else 0
        self.layers = nn.ModuleList(
            EncoderLayer(cfg, cfg.relative_position_embedding and i == 0) for i in range(cfg.encoder_layers)
        )
        if cfg.relative_position_embedding:
            for layer in self.layers[1:]:  # one table shared by every layer, as in the official code
                layer.self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, layer: int | None = None) -> torch.Tensor:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        conv = self.pos_conv(x.transpose(1, 2))
        if self.pos_conv_trim:
            conv = conv[..., : -self.pos_conv_trim]
        x = self.layer_norm(x + F.gelu(conv).transpose(1, 2))
        position_bias, scratch = None, {}
        for i, block in enumerate(self.layers):
            x, position_bias = block(x, padding_mask, position_bias, scratch)
            if layer is not None and i == layer:
                break
        return x


def _fold_weight_norm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """weight = g * v / ||v||, the norm over dims 0 and 1 for each kernel tap (weight_norm with dim=2)."""
    g, v = state.pop(prefix + "weight_g"), state.pop(prefix + "weight_v")
    state[prefix + "weight"] = g * v / v.norm(dim=(0, 1), keepdim=True)
    return state


class BEATs(Encoder):
    """BEATs behind the encoder protocol. ``forward`` runs each clip at its own length (padding never changes a
    clip's frames); :meth:`extract_features` is the official batched path with its two-step padding mask."""

    def __init__(
        self,
        cfg: dict | None = None,
        layer: int | None = None,
        checkpoint: str | None = None,
        fbank_window: str = "povey",
        **overrides,
    ):
        """``fbank_window``: Kaldi window of the front-end; 'povey' is the official BEATs one (paper 000 uses
        'hamming')."""
        super().__init__()
        self.fbank_window = fbank_window
        cfg_dict = {**asdict(BEATsConfig()), **(cfg or {}), **overrides}
        state = None
        if checkpoint is not None:
            ckpt = load_beats_checkpoint(checkpoint)
            cfg_dict = {**cfg_dict, **ckpt["cfg"], **overrides}
            state = ckpt["model"]
        self.cfg = BEATsConfig.from_dict(cfg_dict)
        self.layer = layer
        self.sample_rate = 16000
        self.embed_dim = self.cfg.encoder_embed_dim
        c = self.cfg
        self.patch_embedding = nn.Conv2d(
            1, c.embed_dim, c.input_patch_size, stride=c.input_patch_size, bias=c.conv_bias
        )
        self.layer_norm = nn.LayerNorm(c.embed_dim)
        self.post_extract_proj = (
            nn.Linear(c.embed_dim, c.encoder_embed_dim) if c.embed_dim != c.encoder_embed_dim else None
        )
        self.encoder = TransformerEncoder(c)
        if c.finetuned_model:
            self.predictor = nn.Linear(c.encoder_embed_dim, c.predictor_class)
        self.label_dict = ckpt.get("label_dict") if checkpoint is not None else None
        if state is not None:
            self.load_official_state_dict(state)

    def saved_config(self, config: dict) -> dict:
        """The architecture as read from the checkpoint, so the config alone describes the network."""
        return config | {"cfg": asdict(self.cfg)}

    def load_official_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Strict load of an official state dict (weight-normed positional conv folded here, once)."""
        state = dict(state)
        if "encoder.pos_conv.0.weight_g" in state:
            state = _fold_weight_norm(state, "encoder.pos_conv.0.")
        state = {k.replace("encoder.pos_conv.0.", "encoder.pos_conv."): v for k, v in state.items()}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"BEATs checkpoint does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )

    # -- official batched path ---------------------------------------------------------------------
    def preprocess(self, wave: torch.Tensor) -> torch.Tensor:
        return (kaldi_fbank(wave * 2**15, window_type=self.fbank_window) - FBANK_MEAN) / (2 * FBANK_STD)

    def patch_tokens(self, fb: torch.Tensor) -> torch.Tensor:
        """Normalised fbank ``[B, T, 128]`` -> encoder tokens ``[B, N, D]`` (token = time_patch * F + freq_patch)."""
        x = self.patch_embedding(fb[:, None])
        x = self.layer_norm(x.flatten(2).transpose(1, 2))
        return x if self.post_extract_proj is None else self.post_extract_proj(x)

    @staticmethod
    def forward_padding_mask(features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        extra = padding_mask.shape[1] % features.shape[1]
        if extra > 0:
            padding_mask = padding_mask[:, :-extra]
        return padding_mask.view(padding_mask.shape[0], features.shape[1], -1).all(-1)

    def extract_features(
        self, wave: torch.Tensor, padding_mask: torch.Tensor | None = None, layer: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Official ``BEATs.extract_features``: ``(features [B, N, D], token padding mask)`` (True = padding);
        fine-tuned checkpoints return class probabilities ``[B, C]`` instead of features."""
        fb = self.preprocess(wave)
        if padding_mask is not None:
            padding_mask = self.forward_padding_mask(fb, padding_mask)
        x = self.patch_tokens(fb)
        if padding_mask is not None:
            padding_mask = self.forward_padding_mask(x, padding_mask)
        x = self.encoder(x, padding_mask, layer)
        if self.cfg.finetuned_model and layer is None:
            logits = self.predictor(x)
            if padding_mask is not None:
                logits = logits.masked_fill(padding_mask[..., None], 0.0).sum(1) / (~padding_mask).sum(-1, keepdim=True)
            else:
                logits = logits.mean(1)
            return torch.sigmoid(logits), padding_mask
        return x, padding_mask

    # -- encoder protocol --------------------------------------------------------------------------
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        def run(w):
            x, _ = self.extract_features(w, None, self.layer)
            return x

        return per_length(run, wave, lengths)


def load_beats_checkpoint(path_or_id: str) -> dict:
    """An official checkpoint (``.pt`` with ``cfg``/``model`` [/``label_dict``]) or a safetensors file with the
    cfg JSON in its metadata; Hub ids ``org/repo/file.pt`` are fetched with huggingface_hub."""
    import json
    import os

    path = path_or_id
    if not os.path.exists(path) and path.count("/") >= 2:
        from huggingface_hub import hf_hub_download

        org, repo, filename = path.split("/", 2)
        path = hf_hub_download(f"{org}/{repo}", filename)
    if str(path).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        return {"cfg": json.loads(meta["cfg"]), "model": state}
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "cfg" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path_or_id}: not an official BEATs checkpoint (expected a dict with 'cfg' and 'model')")
    return ckpt
