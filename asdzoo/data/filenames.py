"""Parsing DCASE Task 2 file names (2020-2026 layout, DESIGN §4).

Dev names: ``section_00_source_train_normal_0001_car_A2_spd_28V_mic_1_noise_1.wav``;
eval names: ``section_00_test_0001.wav`` (2026) or ``section_00_0001.wav`` (2024/2025).
Digits are ASCII and the whole name must match (``re.ASCII``, ``fullmatch``): a name with other Unicode digits
(``section_٠٠``) or a trailing newline is not a DCASE name, so it never becomes a section of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_DEV = re.compile(
    r"section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d+)(?:_(?P<attrs>.+))?\.wav",
    re.ASCII,
)
_EVAL = re.compile(r"section_(?P<section>\d{2})_(?:(?P<split>test|train)_)?(?P<index>\d+)\.wav", re.ASCII)


@dataclass(frozen=True)
class ClipName:
    """What a file name says about a clip; unknown fields (eval files) are None."""

    name: str
    section: str
    index: int
    split: str | None = None
    domain: str | None = None
    label: str | None = None
    attributes: str = ""
    attribute_values: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_anomaly(self) -> bool | None:
        return None if self.label is None else self.label == "anomaly"


def parse_attributes(text: str) -> dict[str, str]:
    """``car_A2_spd_28V_mic_1`` -> ``{'car': 'A2', 'spd': '28V', 'mic': '1'}``; ``noAttribute`` -> {}."""
    if not text or text == "noAttribute":
        return {}
    tokens = text.split("_")
    if len(tokens) % 2:
        return {"attr": text}
    return {tokens[i]: tokens[i + 1] for i in range(0, len(tokens), 2)}


def parse_clip_name(path: str | Path) -> ClipName:
    """Parse a dev or eval file name; raise ``ValueError`` naming the file if it fits neither."""
    name = Path(path).name
    m = _DEV.fullmatch(name)
    if m:
        attrs = m["attrs"] or ""
        return ClipName(
            name=name,
            section=m["section"],
            index=int(m["index"]),
            split=m["split"],
            domain=m["domain"],
            label=m["label"],
            attributes=attrs,
            attribute_values=parse_attributes(attrs),
        )
    m = _EVAL.fullmatch(name)
    if m:
        return ClipName(name=name, section=m["section"], index=int(m["index"]), split=m["split"] or "test")
    raise ValueError(
        f"{path}: not a DCASE Task 2 file name (expected e.g. section_00_source_test_normal_0001_<attrs>.wav)"
    )
