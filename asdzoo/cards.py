"""Model cards (README.md with Hugging Face front matter), generated from the registry and its task specs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from asdzoo.atomic import write_text
from asdzoo.zoo import TASKS, ZOO, ZooEntry


def render_model_card(entry: ZooEntry, config: dict | None = None) -> str:
    """Markdown card with Hub front matter; input and usage come from the entry's task."""
    task = TASKS[entry.task]
    tags = [task.topic, "dcase", entry.task, *entry.tags]
    lines = [
        "---",
        "library_name: asdzoo",
        f"license: {entry.license.split(' ')[0].lower()}",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        f"# {entry.name}",
        "",
        entry.description,
        "",
        "| field | value |",
        "| --- | --- |",
        f"| task | {entry.task} |",
        f"| paper | {entry.paper} |",
        f"| licence | {entry.license} |",
        f"| weights | {entry.weights} |",
        f"| Hub repo | {entry.hub_repo or '—'} |",
        f"| input | {entry.input} |",
        *([f"| reported (not reproduced here) | {entry.reported} |"] if entry.reported else []),
        *([f"| needs installed first | {', '.join(entry.requires)} |"] if entry.requires else []),
        "",
        "## Use",
        "",
        "```python",
        "import asdzoo",
        f'model = asdzoo.load("{entry.name}")',
        task.usage,
        "```",
        "",
        f"Command line: `{task.command.format(name=entry.name)}`.",
    ]
    if entry.card_notes:
        lines += ["", "## Notes", "", entry.card_notes]
    if config:
        lines += [
            "",
            "## Configuration",
            "",
            "```json",
            json.dumps(config.get("config", config), indent=2, sort_keys=True),
        ]
        lines += ["```"]
    return "\n".join(lines) + "\n"


def plain_model_card(config: dict) -> str:
    """Card of a saved model that is no registry entry."""
    return (
        f"---\nlibrary_name: asdzoo\ntags: [anomalous-sound-detection, dcase]\n---\n# {config['architecture']}\n\n"
        f"Saved with asdzoo {config['asdzoo_version']} (torch {config['torch_version']}).\n\n"
        f"```json\n{json.dumps(config['config'], indent=2, sort_keys=True)}\n```\n"
    )


def write_model_cards(out_dir: str | os.PathLike) -> list[Path]:
    """Regenerate ``model_cards/<name>.md`` for every entry."""
    paths = []
    for name in sorted(ZOO):
        path = Path(out_dir) / f"{name}.md"
        write_text(path, render_model_card(ZOO[name]))
        paths.append(path)
    return paths
