#!/usr/bin/env bash
# Creates .venv and installs asdzoo on a fresh machine: the CPU torch wheel first (pinned, so no
# dependency pulls a multi-GB CUDA build), then the package with a constraint file (the dev extra brings
# librosa + resampy for the aisfx reference test), then aisfx without its 2022-era pins (librosa==0.9.2,
# numpy==1.23: it ships weights only; asdzoo re-implements its network, and the test runs the wheel's code).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
.venv/bin/python -m pip install -q --no-deps "aisfx==0.1.2"
