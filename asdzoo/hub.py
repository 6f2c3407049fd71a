"""Save and load models: folders, the local model store and the Hugging Face Hub.

A saved model is a folder with ``config.json`` (architecture name, its constructor arguments and the
asdzoo/torch versions that wrote it), ``model.safetensors`` and a ``README.md`` model card. Loading
rebuilds the class from the registry's allow-list (:mod:`asdzoo.zoo`) and never unpickles anything.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import re
import shutil
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from asdzoo.atomic import atomic_dir, atomic_path
from asdzoo.cards import plain_model_card, render_model_card
from asdzoo.version import __version__
from asdzoo.weights import WeightFile
from asdzoo.zoo import ZOO, architecture_class, architecture_name


class ModelNotFoundError(LookupError):
    """No registry entry, directory or Hub repo by that name, or the Hub has no such revision of the repo."""


class WeightsNotAvailableError(FileNotFoundError):
    """The model exists (or may) but its weights are neither installed locally nor reachable: offline with nothing
    cached, the Hub unreachable, refusing access or cutting the download."""


class PublishError(OSError):
    """An upload to the Hub failed (unreachable, refused or cut); the message names the repo and the Hub's answer."""


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did: ``commit_url`` is the commit that holds ``files`` on the Hub (``None`` for a dry
    run); ``changed`` is False when the Hub already had exactly these files, so nothing was committed."""

    repo_id: str
    files: list[str]
    commit_url: str | None = None
    changed: bool = False

    def summary(self) -> str:
        names = ", ".join(self.files)
        if self.commit_url is None:
            return f"would upload to {self.repo_id}: {names}"
        if not self.changed:
            return f"no changes: {self.repo_id} already has {names} ({self.commit_url})"
        return f"uploaded to {self.repo_id}: {names} ({self.commit_url})"


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
    config = _read_config(cfg_path)
    try:
        cls = architecture_class(config.get("architecture"))
    except ValueError as err:
        raise ValueError(f"{cfg_path}: {err}") from None
    saved = str(config.get("asdzoo_version", "0"))
    if saved.split(".")[0] != __version__.split(".")[0]:
        warnings.warn(
            f"{directory} was saved with asdzoo {saved}; this is {__version__} (major versions differ)", stacklevel=2
        )
    try:
        model = cls(**config["config"])
    except (TypeError, ValueError, KeyError) as err:  # arguments the class refuses: a tampered or foreign file
        raise ValueError(f"{cfg_path}: {cls.__name__} cannot be built from its 'config' ({err})") from err
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise WeightsNotAvailableError(f"{weights}: missing weights file")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own SafetensorError (not an OSError) on a damaged header
        raise ValueError(f"{weights}: not a readable safetensors file ({type(err).__name__}: {err})") from err
    fitted = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.startswith("fitted::")}
    state = {k: v for k, v in tensors.items() if not k.startswith("fitted::")}
    try:
        model.load_state_dict(state, strict=True)
        if fitted:
            model.load_fitted_state(fitted)
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:300]
        raise ValueError(f"{weights}: its tensors do not fit {cfg_path.name} ({type(err).__name__}: {first})") from err
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------
# Local model store and the Hub


def _read_config(cfg_path: Path) -> dict:
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{cfg_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ValueError(f"{cfg_path}: expected an object with 'architecture' and a 'config' object")
    if not isinstance(config.get("architecture"), str):
        raise ValueError(f"{cfg_path}: 'architecture' must be a class name, got {config.get('architecture')!r}")
    return config


def asdzoo_home() -> Path:
    """``$ASDZOO_HOME``, else ``$XDG_CACHE_HOME/asdzoo`` (``~/.cache/asdzoo``)."""
    if os.environ.get("ASDZOO_HOME"):
        return Path(os.environ["ASDZOO_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asdzoo"


def store_dir(name: str) -> Path:
    """Where ``install`` puts ``name`` in the store: ``$ASDZOO_HOME/models/<name>``, a Hub id ``org/repo`` as
    ``org--repo`` (the Hub cache's own spelling) so that ``asdzoo.load('org/repo')`` finds it without the Hub."""
    parts = name.split("/")
    if len(parts) > 2 or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise ValueError(f"{name!r} is not a model name: use a registry name or a Hub id org/repo")
    return asdzoo_home() / "models" / "--".join(parts)


def _installed(name: str) -> Path | None:
    """The store folder of ``name`` when a model is installed under it (None too for what is no name at all)."""
    try:
        folder = store_dir(name)
    except ValueError:
        return None
    return folder if (folder / "config.json").is_file() else None


def install(directory: str | os.PathLike, name: str) -> Path:
    """Copy a saved model folder into the store as ``name`` (a registry name or a Hub id ``org/repo``) so
    ``asdzoo.load(name)`` finds it offline. For a registry entry whose weights come from an authors' release,
    ``directory`` may be that release file (or it unpacked): it is converted and saved."""
    target = store_dir(name)
    entry = ZOO.get(name)
    if entry is not None and entry.converter and not (Path(directory) / "config.json").is_file():
        return save_pretrained(entry.convert_release(Path(directory)), target, name)
    model = load_pretrained_dir(directory)  # refuse to install something that does not load
    del model
    with atomic_dir(target) as tmp:
        for item in Path(directory).iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
    return target


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


HUB_FILES = ["config.json", "model.safetensors", "README.md"]
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


class _HubUnreachable(Exception):
    """The Hub did not answer (refused, timed out, cut, 5xx): callers fall back to the cache."""


def hub_timeout() -> float:
    """Seconds to wait for each answer of the Hub (``$ASDZOO_HUB_TIMEOUT``, default 10). huggingface_hub asks for
    a revision with no timeout at all, so a server that accepts and never answers would hang ``load`` forever."""
    return float(os.environ.get("ASDZOO_HUB_TIMEOUT") or 10)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What an unreachable, hung or cutting server raises: OSError (requests, huggingface_hub < 1) and the httpx
    errors of huggingface_hub 1.x (``httpx``) and 2.x (``httpx2``), which are not OSErrors."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def _hub_says(err: BaseException) -> str:
    """The Hub's own words for an error (``Invalid rev id: v9``), else the exception's first line."""
    lines = str(err).strip().splitlines()
    text = getattr(err, "server_message", None) or (lines[0] if lines else "")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _asked(repo_id: str, revision: str | None) -> str:
    return f"Hub repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")


def _not_found(err: BaseException, repo_id: str, revision: str | None) -> ModelNotFoundError:
    from huggingface_hub.errors import RevisionNotFoundError

    if isinstance(err, RevisionNotFoundError):
        return ModelNotFoundError(
            f"{_asked(repo_id, revision)}: the Hub at {_endpoint()} has the repo but not that revision "
            f"({_hub_says(err)}); pass an existing branch, tag or commit sha ({_endpoint()}/{repo_id}/tree/main)"
        )
    return ModelNotFoundError(
        f"{_asked(repo_id, revision)}: the Hub at {_endpoint()} has no such repo ({_hub_says(err)}); check the id, "
        "and if the repo is private or gated, log in (`hf auth login` or HF_TOKEN)"
    )


def _hub_call(call, repo_id: str, revision: str | None):
    """``call()`` with the Hub's answers sorted into asdzoo's errors: a missing repo or revision is a
    ModelNotFoundError, a refusal (401/403) a WeightsNotAvailableError, no answer a :class:`_HubUnreachable`."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return call()
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise _not_found(err, repo_id, revision) from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else 500
        if status >= 500 or status in (408, 429):
            raise _HubUnreachable(_hub_says(err)) from err
        raise WeightsNotAvailableError(
            f"{_asked(repo_id, revision)}: the Hub at {_endpoint()} refused ({_hub_says(err)}); "
            "log in (`hf auth login` or HF_TOKEN) with access to the repo"
        ) from err
    except _transport_errors() as err:
        raise _HubUnreachable(_hub_says(err)) from err


def _resolve_commit(repo_id: str, revision: str | None) -> str:
    """The commit sha ``revision`` names, asked with :func:`hub_timeout`, and written to the cache's ``refs/`` as
    snapshot_download would, so a later load without the Hub finds the snapshot by the same revision."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.file_download import repo_folder_name

    info = _hub_call(lambda: HfApi().repo_info(repo_id, revision=revision, timeout=hub_timeout()), repo_id, revision)
    ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "refs"
    ref = ref / (revision or "main")
    if not ref.is_file() or ref.read_text() != info.sha:
        with contextlib.suppress(OSError), atomic_path(ref) as tmp:  # a read-only shared cache only loses the fallback
            tmp.write_text(info.sha)
    return info.sha


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The complete cached snapshot for ``revision`` (sha, or a branch/tag through ``refs/``), without the Hub."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=HUB_FILES))
    except OSError:  # LocalEntryNotFoundError / IncompleteSnapshotError are FileNotFoundErrors
        return None
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None


def _unavailable(repo_id: str, revision: str | None, hint: str, why: str) -> WeightsNotAvailableError:
    # the store holds one copy per name, no revisions: a Hub id finds it only when asked for without @revision
    then = f", then load {hint!r} without a revision" if revision and hint == repo_id else ""
    return WeightsNotAvailableError(
        f"weights for {hint} are not available: {_asked(repo_id, revision)}: {why}.\n"
        f"  - load it once where the Hub ({_endpoint()}) is reachable (and HF_HUB_OFFLINE is unset): it is cached;\n"
        f"  - or pass a local folder written by save_pretrained: asdzoo.load('/path/to/model');\n"
        f"  - or install a saved folder under this name: asdzoo install DIR --name {hint}{then}"
    )


def _download(repo_id: str, revision: str | None, local_files_only: bool | None, hint: str) -> Path:
    """The snapshot folder of ``repo_id`` at ``revision``: from the cache when offline, when the revision is a
    cached commit sha, or (with a warning) when the Hub does not answer; else downloaded, every wait bounded."""
    from huggingface_hub import snapshot_download

    if _offline(local_files_only) or (revision and _COMMIT_SHA.fullmatch(revision)):
        cached = _cached_snapshot(repo_id, revision)
        if cached is not None:
            return cached
        if _offline(local_files_only):
            raise _unavailable(repo_id, revision, hint, "offline mode is on and nothing is cached")
    try:
        commit = _resolve_commit(repo_id, revision)
    except _HubUnreachable as err:
        cached = _cached_snapshot(repo_id, revision)
        if cached is None:
            why = f"the Hub did not answer ({err}) and nothing is cached"
            raise _unavailable(repo_id, revision, hint, why) from err
        warnings.warn(
            f"{_asked(repo_id, revision)}: the Hub at {_endpoint()} did not answer ({err}); "
            f"loading the cached snapshot {cached.name}",
            stacklevel=3,
        )
        return cached
    try:
        return Path(
            _hub_call(
                lambda: snapshot_download(
                    repo_id, revision=commit, allow_patterns=HUB_FILES, etag_timeout=hub_timeout()
                ),
                repo_id,
                revision,
            )
        )
    except _HubUnreachable as err:
        entry = "" if hint == repo_id else f"weights for {hint}: "
        raise WeightsNotAvailableError(
            f"{entry}downloading {_asked(repo_id, revision)} (commit {commit}) from {_endpoint()} failed: {err}; "
            "nothing partial was kept, load again when the connection is stable"
        ) from err


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
    (:mod:`asdzoo.weights`). A Hub id without a revision resolves first to the store too
    (``$ASDZOO_HOME/models/org--name``, see :func:`install`), then to the Hub cache and the Hub: each wait for the Hub
    is bounded by :func:`hub_timeout`, and a Hub that does not answer falls back to the cached snapshot with a
    warning. A missing repo or revision raises ModelNotFoundError; weights that cannot be had (offline with nothing
    cached, Hub unreachable, download cut) WeightsNotAvailableError.
    """
    text = str(name_or_path)
    if not text.strip() or "\x00" in text:
        raise ModelNotFoundError(f"model name {text!r}: give a registry name, a Hub id org/name or a saved folder")
    try:
        path = Path(text).expanduser()
    except RuntimeError as err:  # "~user" of an unknown user
        raise ModelNotFoundError(f"model {text!r}: {err}") from None
    if (encoder_weights or weights_dir) and (text not in ZOO or ZOO[text].weights != "encoder-files"):
        raise ValueError(f"{text!r} is not built from encoder weight files: encoder_weights/weights_dir do not apply")
    if path.is_dir():
        return load_pretrained_dir(path, device)
    if text in ZOO:
        entry = ZOO[text]
        stored = store_dir(text)
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
            f"{text!r} has no published weights yet: train it "
            f"({entry.train_command or entry.card_notes or 'see its model card'}) "
            f"and run `asdzoo install DIR --name {text}`, or pass a saved folder to asdzoo.load"
        )
    repo, _, rev = text.partition("@")
    revision = revision or rev or None
    if revision is None and (installed := _installed(repo)) is not None:
        return load_pretrained_dir(installed, device)  # `asdzoo install DIR --name NAME` (a Hub id or any name)
    if repo.count("/") == 1 and all(repo.split("/")) and not repo.startswith("."):
        return load_pretrained_dir(_download(repo, revision, local_files_only, repo), device)
    known = ", ".join(sorted(ZOO))
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a registry name ({known}), an installed name, a folder, or a Hub id org/name"
    )


def publish(directory: str | os.PathLike, repo_id: str, dry_run: bool = False, private: bool = False) -> Published:
    """Upload a saved model folder to the Hub (``dry_run`` only lists what would be uploaded). Files the Hub
    already has unchanged are not sent again and an unchanged folder makes no commit (``changed`` is False)."""
    load_pretrained_dir(directory)  # never publish something that does not load
    files = sorted(p.name for p in Path(directory).iterdir() if p.is_file())
    if dry_run:
        return Published(repo_id, files)
    from huggingface_hub import HfApi

    api = HfApi()

    def upload():
        api.create_repo(repo_id, private=private, exist_ok=True)
        before = api.repo_info(repo_id, timeout=hub_timeout()).sha
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(directory),
            allow_patterns=files,
            commit_message=f"asdzoo {__version__} upload",
        )
        return Published(repo_id, files, info.commit_url, changed=info.oid != before)

    where = f"publishing {directory} to Hub repo {repo_id!r} at {_endpoint()} failed"
    try:
        return _hub_call(upload, repo_id, None)
    except (_HubUnreachable, ModelNotFoundError, WeightsNotAvailableError) as err:
        raise PublishError(f"{where}: {err}") from err
    except (RuntimeError, ValueError) as err:  # huggingface_hub wraps a failed LFS upload or a malformed answer
        cause = f" ({_hub_says(err.__cause__)})" if err.__cause__ is not None else ""
        raise PublishError(f"{where}: {_hub_says(err)}{cause}") from err
