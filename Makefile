# Two commands for a newcomer: `make quickstart` and `make test` (each installs what it needs first).
.PHONY: setup test test-slow quickstart cards lint

setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/ruff check asdzoo tests benchmarks scripts train_cli.py
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

test-slow: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -m slow

quickstart: setup
	.venv/bin/asdzoo quickstart --out asdzoo_quickstart

cards: setup
	.venv/bin/asdzoo cards --out model_cards

lint: setup
	.venv/bin/ruff check asdzoo tests benchmarks scripts train_cli.py
