"""Save and load models: folders, the local model store and the Hugging Face Hub.

A saved model is a folder with ``config.json`` (architecture name, its constructor arguments and the
asdzoo/torch versions that wrote it), ``model.safetensors`` and a ``README.md`` model card. Loading
rebuilds the class from the registry's allow-list (:mod:`asdzoo.zoo`) and never unpickles anything.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from asdzoo.atomic import atomic_dir, atomic_path
from asdzoo.cards import plain_model_card, render_model_card
from asdzoo.version import __version__
from asdzoo.weights import WeightFile
from asdzoo.zoo import ZOO, architecture_class, architecture_name


class ModelNotFoundError(LookupError):
    """No registry entry, directory or Hub repo by that name."""


class WeightsNotAvailableError(FileNotFoundError):
    """The entry exists but its weights are neither installed locally nor reachable."""


def list_models() -> list[dict]:
    """Every registry entry with its licence, paper, task and status of weights."""
    return [ZOO[k].record() for k in sorted(ZOO)]


# ------------------------------------------------------------------------------------------------
# Saving and loading folders


def _tensors_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # clones: safetensors refuses tensors that share storage (BEATs shares one position table across layers)
    tensors = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    fitted = model.fitted_state() if hasattr(model, "fitted_state") else {}
    tensors.update({f"fitted::{k}": v.detach().cpu().contiguous() for k, v in fitted.items()})
    return tensors


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike, name: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``directory`` atomically."""
    config = {
        "architecture": architecture_name(model),
        "config": model.config,
        "name": name,
        "asdzoo_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    with atomic_dir(directory) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(_tensors_for_saving(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        entry = ZOO.get(name) if name else None
        (tmp / "README.md").write_text(render_model_card(entry, config) if entry else plain_model_card(config))
    return Path(directory)


def load_pretrained_dir(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a model from a folder written by :func:`save_pretrained`."""
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise ModelNotFoundError(f"{directory}: no config.json (not a folder written by save_pretrained)")
    config = json.loads(cfg_path.read_text())
    try:
        cls = architecture_class(config.get("architecture"))
    except ValueError as err:
        raise ValueError(f"{cfg_path}: {err}") from None
    saved = str(config.get("asdzoo_version", "0"))
    if saved.split(".")[0] != __version__.split(".")[0]:
        warnings.warn(
            f"{directory} was saved with asdzoo {saved}; this is {__version__} (major versions differ)", stacklevel=2
        )
    model = cls(**config["config"])
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise WeightsNotAvailableError(f"{weights}: missing weights file")
    tensors = load_file(str(weights))
    fitted = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.startswith("fitted::")}
    state = {k: v for k, v in tensors.items() if not k.startswith("fitted::")}
    model.load_state_dict(state, strict=True)
    if fitted:
        model.load_fitted_state(fitted)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------
# Local model store and the Hub


def asdzoo_home() -> Path:
    """``$ASDZOO_HOME``, else ``$XDG_CACHE_HOME/asdzoo`` (``~/.cache/asdzoo``)."""
    if os.environ.get("ASDZOO_HOME"):
        return Path(os.environ["ASDZOO_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asdzoo"


def install(directory: str | os.PathLike, name: str) -> Path:
    """Copy a saved model folder into the store as ``name`` so ``asdzoo.load(name)`` finds it offline. For a
    registry entry whose weights come from an authors' release, ``directory`` may be that release file (or it
    unpacked): it is converted and saved."""
    entry = ZOO.get(name)
    if entry is not None and entry.converter and not (Path(directory) / "config.json").is_file():
        return save_pretrained(entry.convert_release(Path(directory)), asdzoo_home() / "models" / name, name)
    model = load_pretrained_dir(directory)  # refuse to install something that does not load
    del model
    target = asdzoo_home() / "models" / name
    with atomic_dir(target) as tmp:
        for item in Path(directory).iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
    return target


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _download(repo_id: str, revision: str | None, local_files_only: bool | None, hint: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    offline = _offline(local_files_only)
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                local_files_only=offline,
                allow_patterns=["config.json", "model.safetensors", "README.md"],
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as err:
        where = "offline mode is on and nothing is cached" if offline else f"download failed ({type(err).__name__})"
        raise WeightsNotAvailableError(
            f"weights for {hint} are not available: {where}.\n"
            f"  - online: run once with network access to fetch Hub repo {repo_id!r}"
            f"{'' if not revision else f' at revision {revision!r}'} (unset HF_HUB_OFFLINE);\n"
            f"  - or pass a local folder written by save_pretrained: asdzoo.load('/path/to/model');\n"
            f"  - or train it and install it: asdzoo install DIR --name {hint}"
        ) from None


def _fetch_release(entry, local_files_only: bool | None) -> Path:
    """The entry's release file under ``$ASDZOO_HOME/downloads`` (downloaded once, atomically)."""
    filename = Path(urllib.parse.urlparse(entry.release_url).path).name
    target = asdzoo_home() / "downloads" / filename
    if target.is_file():
        return target
    todo = (
        f"download {entry.release_url} where the network allows and run `asdzoo install {filename} --name {entry.name}`"
    )
    if _offline(local_files_only):
        raise WeightsNotAvailableError(
            f"weights for {entry.name!r}: offline mode is on and {target} is missing; {todo}"
        )
    try:
        return download_file(entry.release_url, target, check=_require_zip)
    except WeightsNotAvailableError as err:
        raise WeightsNotAvailableError(f"weights for {entry.name!r}: {err}; {todo}") from None


def _require_zip(path: Path) -> None:
    if not zipfile.is_zipfile(path):  # e.g. a proxy's HTML page: never cache it as the release
        raise ValueError("the server's answer is not a zip archive")


def download_file(url: str, target: Path, check=None) -> Path:
    """Stream ``url`` into ``target`` atomically; ``check(path)`` may reject what arrived with a ValueError."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(target) as tmp:
            with open(tmp, "wb") as f:  # streamed: weight files and release archives can be GBs
                shutil.copyfileobj(response, f)
            if check is not None:
                check(tmp)
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, cut connections
        raise WeightsNotAvailableError(f"downloading {url} failed ({err})") from None
    return target


def resolve_weight_files(
    entry_name: str,
    files: Mapping[str, WeightFile],
    given: Mapping[str, str | os.PathLike] | None = None,
    weights_dir: str | os.PathLike | None = None,
    offline: bool = True,
) -> dict[str, Path]:
    """Local paths of every file of an ``encoder-files`` entry, found in this order: the path the user gave for its
    key (``asdzoo.load(name, encoder_weights={key: path})``), a weights folder (``weights_dir``, then
    ``$ASDZOO_HOME/weights/``) under its official name, the files downloaded earlier (``$ASDZOO_HOME/downloads/``);
    online, a file with a direct ``url`` is downloaded there. One error lists every missing file and where to get it.
    """
    given = dict(given or {})
    unknown = sorted(set(given) - set(files))
    if unknown:
        raise ValueError(f"{entry_name!r} takes encoder weights {sorted(files)}, not {unknown}")
    folders = [Path(weights_dir).expanduser()] if weights_dir else []
    folders += [asdzoo_home() / "weights", asdzoo_home() / "downloads"]
    found, missing = {}, []
    for key, wf in files.items():
        if key in given:
            path = Path(given[key]).expanduser()
            if path.is_file():
                found[key] = path
            else:
                missing.append(f"{key}: {path} (given for it) is not a file")
            continue
        path = next((f / wf.filename for f in folders if (f / wf.filename).is_file()), None)
        if path is None and wf.url and not offline:
            try:
                path = download_file(wf.url, asdzoo_home() / "downloads" / wf.filename)
            except WeightsNotAvailableError as err:
                missing.append(f"{key}: {wf.filename} ({err}; {wf.where})")
                continue
        if path is None:
            missing.append(f"{key}: {wf.filename} ({wf.where})")
        else:
            found[key] = path
    if missing:
        lines = "\n".join(f"  - {m}" for m in missing)
        raise WeightsNotAvailableError(
            f"{entry_name!r} needs {len(files)} encoder weight file(s); {len(missing)} not found:\n{lines}\n"
            f"Put each file under {asdzoo_home() / 'weights'} with its official name (or a folder given as "
            f"weights_dir / --weights-dir), or pass paths: asdzoo.load({entry_name!r}, "
            "encoder_weights={key: path}) / --encoder-weights KEY=PATH."
        )
    return found


def load(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    local_files_only: bool | None = None,
    encoder_weights: dict[str, str | os.PathLike] | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> torch.nn.Module:
    """Load a zoo model from a registry name, a Hub id ``org/name[@revision]`` or a saved folder.

    Registry names resolve first to the local store (``$ASDZOO_HOME/models/<name>``), then to what the
    entry builds without weights (training-free and bundled-weight entries), then to its Hub repo. Entries built
    on official encoder files (``encoder-files``) find them through ``encoder_weights`` / ``weights_dir``
    (:mod:`asdzoo.weights`).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if (encoder_weights or weights_dir) and (text not in ZOO or ZOO[text].weights != "encoder-files"):
        raise ValueError(f"{text!r} is not built from encoder weight files: encoder_weights/weights_dir do not apply")
    if path.is_dir():
        return load_pretrained_dir(path, device)
    if text in ZOO:
        entry = ZOO[text]
        stored = asdzoo_home() / "models" / text
        if (stored / "config.json").is_file():
            return load_pretrained_dir(stored, device)
        if entry.weights in ("bundled", "training-free", "fit-trains"):
            return entry.build().to(device).eval()
        if entry.weights == "encoder-files":
            files = resolve_weight_files(text, entry.files, encoder_weights, weights_dir, _offline(local_files_only))
            return entry.build(files).to(device).eval()
        if entry.weights == "release":
            model = entry.convert_release(_fetch_release(entry, local_files_only))
            save_pretrained(model, stored, text)  # converted once; later loads read the store
            return model.to(device).eval()
        if entry.hub_repo:
            return load_pretrained_dir(
                _download(entry.hub_repo, revision or entry.revision, local_files_only, text), device
            )
        raise WeightsNotAvailableError(
            f"{text!r} has no published weights yet: train it ({entry.card_notes or 'see its model card'}) "
            f"and run `asdzoo install DIR --name {text}`, or pass a saved folder to asdzoo.load"
        )
    if "/" in text and not text.startswith((".", "/")) and text.count("/") == 1:
        repo, _, rev = text.partition("@")
        return load_pretrained_dir(_download(repo, revision or rev or None, local_files_only, repo), device)
    known = ", ".join(sorted(ZOO))
    raise ModelNotFoundError(f"unknown model {text!r}: not a registry name ({known}), a folder, or a Hub id org/name")


def publish(directory: str | os.PathLike, repo_id: str, dry_run: bool = False, private: bool = False) -> list[str]:
    """Upload a saved model folder to the Hub (``dry_run`` only lists what would be uploaded)."""
    load_pretrained_dir(directory)  # never publish something that does not load
    files = sorted(p.name for p in Path(directory).iterdir() if p.is_file())
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(directory), commit_message=f"asdzoo {__version__} upload")
    return files
