"""asdzoo.load / asdzoo.hub.publish against a local Hub-compatible server (tests/hub_server.py).

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_HUB_DISABLE_XET`` once, into
``huggingface_hub.constants``, when it is first imported (and tests/conftest.py sets ``HF_HUB_OFFLINE=1`` before
that). The ``hub`` fixture therefore sets each variable the way a user would and patches the matching constant
(``ENDPOINT`` together with ``HUGGINGFACE_CO_URL_TEMPLATE``, which ``hf_hub_url`` builds file URLs from), so both
asdzoo (which reads the environment) and huggingface_hub (which reads its constants) see the same settings.
"""

from __future__ import annotations

import time

import pytest
import torch
from hub_server import FakeHub

import asdzoo
from asdzoo.hub import ModelNotFoundError, PublishError, WeightsNotAvailableError, install, publish, save_pretrained
from asdzoo.systems.ae_baseline import AEBaseline

TIMEOUT = 2  # $ASDZOO_HUB_TIMEOUT for these tests: how long a hung server is waited for


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    server = FakeHub().start()
    settings = {
        "HF_ENDPOINT": ("ENDPOINT", server.url),
        "HF_HUB_CACHE": ("HF_HUB_CACHE", str(tmp_path / "hf_cache")),
        "HF_HUB_DISABLE_XET": ("HF_HUB_DISABLE_XET", True),  # upload_folder: create_commit + LFS, not Xet
    }
    for env, (constant, value) in settings.items():
        monkeypatch.setenv(env, "1" if value is True else value)
        monkeypatch.setattr(hf, constant, value)
    monkeypatch.setattr(hf, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # conftest.py's offline default: these tests go online
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # never send the user's own token (the server checks none)
    monkeypatch.setenv("ASDZOO_HUB_TIMEOUT", str(TIMEOUT))
    yield server
    server.stop()


def saved(tmp_path, name: str, seed: int):
    torch.manual_seed(seed)
    model = AEBaseline(hidden=8, bottleneck=4)
    return model, save_pretrained(model, tmp_path / name)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture
def two_commits(hub, tmp_path):
    """``org/ae``: commit 1 tagged ``v1`` (model_a), then commit 2 on main (model_b)."""
    model_a, dir_a = saved(tmp_path, "a", 0)
    model_b, dir_b = saved(tmp_path, "b", 1)
    assert (dir_a / "model.safetensors").read_bytes() != (dir_b / "model.safetensors").read_bytes()
    sha_a = hub.add_folder("org/ae", dir_a, tag="v1")
    hub.add_folder("org/ae", dir_b)
    return model_a, model_b, sha_a


def test_load_by_name_tag_and_sha(two_commits):
    model_a, model_b, sha_a = two_commits
    assert_same_weights(asdzoo.load("org/ae"), model_b)
    assert_same_weights(asdzoo.load("org/ae@v1"), model_a)
    assert_same_weights(asdzoo.load(f"org/ae@{sha_a}"), model_a)
    assert_same_weights(asdzoo.load("org/ae", revision="v1"), model_a)


def test_cached_reload_with_the_server_stopped(hub, two_commits):
    model_a, model_b, sha_a = two_commits
    asdzoo.load("org/ae")
    asdzoo.load(f"org/ae@{sha_a}")
    hub.stop()
    t0 = time.time()
    with pytest.warns(UserWarning, match=r"'org/ae'.*did not answer \(ConnectError.*cached snapshot"):
        assert_same_weights(asdzoo.load("org/ae"), model_b)
    assert_same_weights(asdzoo.load(f"org/ae@{sha_a}"), model_a)  # a cached commit needs no Hub at all
    with pytest.raises(WeightsNotAvailableError, match=r"'org/ae' at revision 'v1': the Hub did not answer"):
        asdzoo.load("org/ae@v1")  # never fetched: nothing to fall back on
    assert time.time() - t0 < 5


def test_cached_reload_with_a_hung_server_is_bounded(hub, two_commits):
    _, model_b, _ = two_commits
    asdzoo.load("org/ae")
    hub.mode = "hang"
    t0 = time.time()
    with pytest.warns(UserWarning, match=r"did not answer \(ReadTimeout"):
        assert_same_weights(asdzoo.load("org/ae"), model_b)
    assert time.time() - t0 < TIMEOUT + 5
    t0 = time.time()
    with pytest.raises(WeightsNotAvailableError, match=r"'org/other': the Hub did not answer.*nothing is cached"):
        asdzoo.load("org/other")
    assert time.time() - t0 < TIMEOUT + 5


def test_wrong_revision_says_what_the_hub_answered(two_commits):
    t0 = time.time()
    with pytest.raises(ModelNotFoundError) as err:
        asdzoo.load("org/ae@v9")
    msg = str(err.value)
    assert "'org/ae' at revision 'v9'" in msg and "Invalid rev id: v9" in msg and "branch, tag or commit" in msg
    assert "HF_HUB_OFFLINE" not in msg
    with pytest.raises(ModelNotFoundError, match="Invalid rev id: " + "f" * 40):
        asdzoo.load("org/ae@" + "f" * 40)  # a full sha that is neither cached nor on the Hub
    assert time.time() - t0 < 5


def test_missing_repo_is_model_not_found(hub):
    t0 = time.time()
    with pytest.raises(ModelNotFoundError) as err:
        asdzoo.load("org/nothing-here")
    msg = str(err.value)
    assert "'org/nothing-here'" in msg and "no such repo" in msg and "Repository not found" in msg
    assert "HF_HUB_OFFLINE" not in msg and hub.url in msg
    assert not issubclass(ModelNotFoundError, WeightsNotAvailableError)
    assert not issubclass(WeightsNotAvailableError, ModelNotFoundError)
    assert time.time() - t0 < 5


def test_download_cut_mid_file_is_a_clear_error_and_caches_nothing(hub, two_commits):
    hub.mode = "truncate"
    t0 = time.time()
    with pytest.raises(WeightsNotAvailableError, match=r"'org/ae'.*failed: RemoteProtocolError") as err:
        asdzoo.load("org/ae")
    assert "commit" in str(err.value)
    assert time.time() - t0 < 15  # huggingface_hub retries a cut download 5 times, 1 s apart
    hub.mode = "ok"
    assert_same_weights(asdzoo.load("org/ae"), two_commits[1])  # no half file was kept as the blob


def test_publish_then_load_is_bit_identical(hub, tmp_path):
    model, folder = saved(tmp_path, "m", 2)
    result = publish(folder, "me/ae")
    assert result.changed and result.files == ["README.md", "config.json", "model.safetensors"]
    assert result.commit_url.startswith(f"{hub.url}/me/ae/commit/")
    assert result.commit_url.rsplit("/", 1)[1] == hub.repos["me/ae"].refs["main"]
    assert (
        hub.repos["me/ae"].commits[hub.repos["me/ae"].refs["main"]]["model.safetensors"]
        == (folder / "model.safetensors").read_bytes()
    )
    assert_same_weights(asdzoo.load("me/ae"), model)


def test_publish_twice_makes_no_empty_commit(hub, tmp_path):
    _, folder = saved(tmp_path, "m", 3)
    first = publish(folder, "me/ae")
    commits = hub.commit_count("me/ae")
    again = publish(folder, "me/ae")
    assert not again.changed and again.commit_url == first.commit_url
    assert hub.commit_count("me/ae") == commits
    assert again.summary().startswith("no changes: me/ae already has")
    _, folder = saved(tmp_path, "m", 4)  # new weights: a real commit
    assert publish(folder, "me/ae").changed and hub.commit_count("me/ae") == commits + 1


def test_publish_failure_is_one_clear_error(hub, tmp_path):
    _, folder = saved(tmp_path, "m", 5)
    hub.stop()
    with pytest.raises(PublishError, match=r"Hub repo 'me/ae' at http://127\.0\.0\.1:\d+ failed: ConnectError"):
        publish(folder, "me/ae")


def test_refused_upload_is_a_publish_error_and_commits_nothing(hub, tmp_path):
    _, folder = saved(tmp_path, "m", 7)
    hub.mode = "refuse_upload"
    with pytest.raises(PublishError, match=r"'me/ae'.*model\.safetensors.*LFS storage refused the upload"):
        publish(folder, "me/ae")
    assert hub.commit_count("me/ae") == 1  # only the repo's initial commit


def test_installed_names_load_without_the_hub(tmp_path, isolated_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotAvailableError, match="asdzoo install DIR --name org/local"):
        asdzoo.load("org/local")
    model, folder = saved(tmp_path, "m", 6)
    assert install(folder, "org/local") == isolated_home / "models" / "org--local"
    assert_same_weights(asdzoo.load("org/local"), model)
    with pytest.raises(ValueError, match="not a model name"):
        install(folder, "org/../../x")
    install(folder, "my-site3-ae")  # a name of one's own, neither registry entry nor Hub id (README's example)
    assert_same_weights(asdzoo.load("my-site3-ae"), model)
