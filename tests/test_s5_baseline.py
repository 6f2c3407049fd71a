"""The Task 4 baseline systems: official release conversion, the S5 chain's ordering and query, fine-tuning scopes,
saving and loading, and the registry's release path."""

from __future__ import annotations

import zipfile

import pytest
import torch
from safetensors.torch import load_file

from asdzoo.data.s5 import LABELS, SILENCE, TAGGER_CLASSES
from asdzoo.data.task4 import separator_query
from asdzoo.hub import WeightsNotAvailableError, install, load, save_pretrained
from asdzoo.nn.resunetk import ResUNetK
from asdzoo.systems.s5_baseline import S5Chain, S5Separator, S5Tagger, load_official_s5
from asdzoo.zoo import ZOO, ZooEntry

from reference import reference_dir

# the tiny official taggers of ../shared/reference/m2d (README: embed 64, depth 2, 4 heads, head 32/16)
TINY_M2D = dict(embed_dim=64, depth=2, num_heads=4)
TINY_TAGGER = dict(m2d=TINY_M2D, track_in=32, track_hidden=16)
SMALL_SEPARATOR = dict(width=0.0625)


@pytest.fixture(scope="module")
def m2d_ref():
    d = reference_dir("m2d")
    return d, load_file(str(d / "m2d_io.safetensors"))


@pytest.fixture(scope="module")
def release_zip(m2d_ref, tmp_path_factory):
    """A ``baseline_checkpoint.zip`` in the release's layout: the tiny official 4-channel tagger checkpoint and a
    Lightning checkpoint (``model.`` prefix) of a small ResUNetK."""
    d, _ = m2d_ref
    torch.manual_seed(0)
    separator = ResUNetK(width=SMALL_SEPARATOR["width"])
    path = tmp_path_factory.mktemp("release") / "baseline_checkpoint.zip"
    sep_ckpt = path.parent / "resunetk.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in separator.state_dict().items()}}, sep_ckpt)
    with zipfile.ZipFile(path, "w") as z:
        z.write(d / "tiny_m2dat_4c.ckpt", "checkpoint/m2dat_4c.ckpt")
        z.write(sep_ckpt, "checkpoint/resunetk.ckpt")
    return path, separator


def test_release_conversion_matches_the_official_tagger_and_chains_as_the_baseline(m2d_ref, release_zip):
    _, io = m2d_ref
    path, separator = release_zip
    chain = load_official_s5(path, tagger=dict(channels=4, **TINY_TAGGER), separator=SMALL_SEPARATOR)
    mixture = io["D_input_mixture"]
    with torch.no_grad():
        logits = chain.tagger(mixture)
    assert (logits - io["E_m2dat_4c_logits"]).abs().max() < 1e-4
    out = chain.separate(mixture)
    # labels: argmax per slot, then silent slots last (S5.predict_label_separate)
    argmax = [[TAGGER_CLASSES[i] for i in row] for row in io["E_m2dat_4c_logits"].argmax(-1).tolist()]
    for got, raw in zip(out["labels"], argmax):
        assert got == [x for x in raw if x != SILENCE] + [x for x in raw if x == SILENCE]
    best = io["E_m2dat_4c_logits"].softmax(-1).max(-1).values
    for b, raw in enumerate(argmax):
        order = sorted(range(3), key=lambda k, raw=raw: raw[k] == SILENCE)
        assert torch.allclose(out["probabilities"][b], best[b, order], atol=1e-5)
    # waveforms: the release separator queried with those labels
    query = torch.stack([separator_query(row) for row in out["labels"]])
    with torch.no_grad():
        expected = separator.eval()(mixture, query)["waveform"][:, :, 0]
    assert torch.allclose(out["waveforms"], expected, atol=1e-6)


def test_release_missing_checkpoint_names_the_file(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(FileNotFoundError, match="m2dat_1c.ckpt, resunetk.ckpt"):
        load_official_s5(tmp_path, tagger=dict(channels=1, **TINY_TAGGER), separator=SMALL_SEPARATOR)


@pytest.fixture
def tiny_release_entry(release_zip):
    entry = ZooEntry(
        "s5-test-tiny-4c",
        architecture="asdzoo.systems.s5_baseline:S5Chain",
        task="task4",
        description="test entry",
        paper="-",
        license="-",
        weights="release",
        release_url="https://example.invalid/baseline_checkpoint.zip",
        converter="asdzoo.systems.s5_baseline:load_official_s5",
        kwargs=dict(tagger=dict(channels=4, **TINY_TAGGER), separator=SMALL_SEPARATOR),
    )
    ZOO[entry.name] = entry
    yield entry
    del ZOO[entry.name]


def test_release_entry_offline_says_what_to_run_then_installs_from_the_zip(tiny_release_entry, release_zip, m2d_ref):
    path, _ = release_zip
    with pytest.raises(WeightsNotAvailableError, match="asdzoo install baseline_checkpoint.zip --name s5-test-tiny-4c"):
        load("s5-test-tiny-4c", local_files_only=True)
    install(path, "s5-test-tiny-4c")
    model = load("s5-test-tiny-4c", local_files_only=True)
    assert isinstance(model, S5Chain)
    _, io = m2d_ref
    with torch.no_grad():
        assert (model.tagger(io["D_input_mixture"]) - io["E_m2dat_4c_logits"]).abs().max() < 1e-4


def test_registry_entries_build_the_official_sizes():
    chain = ZOO["s5-baseline-4c"].build()
    m2d = chain.tagger.model.m2d.cfg
    assert (m2d.embed_dim, m2d.depth, m2d.num_heads, m2d.input_size, m2d.sample_rate) == (
        768,
        12,
        12,
        (80, 1001),
        32000,
    )
    assert chain.tagger.model.channels == 4 and ZOO["s5-baseline-1c"].build().tagger.model.channels == 1
    # 26,740,971 learnable + the torchlibrosa kernels (buffers here) = the official 29,888,747
    assert sum(p.numel() for p in chain.separator.parameters()) == 26_740_971


def test_finetuning_scopes_follow_the_baseline():
    head = S5Tagger(**TINY_TAGGER, finetuning_layers="head")
    assert {n for n, p in head.named_parameters() if p.requires_grad} == {
        f"model.{n}" for n, _ in head.model.named_parameters() if n.startswith("head.")
    }
    deep = S5Tagger(m2d=dict(TINY_M2D, depth=4), track_in=32, track_hidden=16, finetuning_layers="2_blocks")
    names = {n for n, p in deep.named_parameters() if p.requires_grad}
    blocks = {n.split(".")[4] for n in names if ".blocks." in n}
    assert blocks == {"2", "3"}
    assert any(".backbone.norm." in n for n in names) and not any("patch_embed" in n or "pos_embed" in n for n in names)
    everything = S5Tagger(**TINY_TAGGER, finetuning_layers="all")
    assert all(p.requires_grad for p in everything.parameters())
    for bad in ("3_blocks", "x_blocks", "heads"):
        with pytest.raises(ValueError, match="finetuning_layers"):
            S5Tagger(**TINY_TAGGER, finetuning_layers=bad)


def test_chain_saves_and_loads_bit_identically(tmp_path):
    torch.manual_seed(0)
    chain = S5Chain.from_parts(S5Tagger(channels=1, **TINY_TAGGER), S5Separator(**SMALL_SEPARATOR))
    save_pretrained(chain, tmp_path / "chain")
    again = load(tmp_path / "chain")
    mixture = 0.1 * torch.randn(2, 4, 16000)
    a, b = chain.separate(mixture), again.separate(mixture)
    assert a["labels"] == b["labels"] and torch.equal(a["waveforms"], b["waveforms"])
    assert all(label in (*LABELS, SILENCE) for row in a["labels"] for label in row)


def test_stage_two_starts_from_a_saved_stage_one(tmp_path):
    torch.manual_seed(0)
    stage1 = S5Tagger(**TINY_TAGGER)
    save_pretrained(stage1, tmp_path / "stage1")
    stage2 = S5Tagger(**TINY_TAGGER, init_from=str(tmp_path / "stage1"), finetuning_layers="2_blocks", lr=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(stage1.state_dict().values(), stage2.state_dict().values()))
    assert stage2.config["init_from"] is None and stage2.config["m2d"]["depth"] == 2
    with pytest.raises(ValueError, match="not a tagger of this architecture"):
        S5Tagger(m2d=dict(TINY_M2D, depth=3), track_in=32, track_hidden=16, init_from=str(tmp_path / "stage1"))


def test_silent_slots_move_last_and_name_the_written_files(tmp_path):
    """A tagger answering [silence, Speech, silence] gives labels [Speech, silence, silence], the query of Speech in
    slot 0, the probabilities reordered with them, and one file ``<soundscape>_0_Speech.wav``."""
    import soundfile as sf

    from asdzoo.tasks.task4 import separate_root

    torch.manual_seed(0)
    chain = S5Chain.from_parts(S5Tagger(channels=1, **TINY_TAGGER), S5Separator(**SMALL_SEPARATOR))
    chain.tagger.tag = lambda mixture: ([[SILENCE, "Speech", SILENCE]] * len(mixture), torch.tensor([[0.7, 0.9, 0.6]]))
    mixture = 0.1 * torch.randn(1, 4, 8000)
    out = chain.separate(mixture)
    assert out["labels"] == [["Speech", SILENCE, SILENCE]]
    assert torch.allclose(out["probabilities"], torch.tensor([[0.9, 0.7, 0.6]]))
    with torch.no_grad():
        expected = chain.separator(mixture, separator_query(["Speech"])[None])
    assert torch.equal(out["waveforms"], expected) and expected[0, 0].abs().max() > 0 and not expected[0, 1:].any()
    data = tmp_path / "data" / "synthesized" / "test" / "soundscape"
    data.mkdir(parents=True)
    sf.write(data / "mix_7.wav", mixture[0].T.numpy(), 32000, subtype="FLOAT")
    separate_root(chain, tmp_path / "data", tmp_path / "sub", progress=False)
    assert sorted(p.name for p in (tmp_path / "sub" / "eval_out").iterdir()) == ["mix_7_0_Speech.wav"]


def test_separate_refuses_outputs_that_would_replace_data(tmp_path):
    from asdzoo.tasks.task4 import separate_root

    chain = S5Chain.from_parts(S5Tagger(channels=1, **TINY_TAGGER), S5Separator(**SMALL_SEPARATOR))
    (tmp_path / "data" / "soundscape").mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    for out, message in (
        (tmp_path / "data", "outside the data"),
        (tmp_path / "data" / "sub", "outside the data"),
        (tmp_path, "outside the data"),
        (tmp_path / "notes", "not a previous submission"),
    ):
        with pytest.raises(ValueError, match=message):
            separate_root(chain, tmp_path / "data", out, progress=False)
    assert (tmp_path / "data" / "soundscape").is_dir() and (tmp_path / "notes").is_dir()


def test_release_download_branch_converts_once_and_never_caches_a_non_zip(tiny_release_entry, release_zip, tmp_path):
    """``load`` of a release entry downloads (here from a file:// URL), converts and stores it; an answer that is no
    zip archive (a proxy's page) is refused and not kept."""
    from dataclasses import replace

    from asdzoo.hub import asdzoo_home

    path, _ = release_zip
    ZOO[tiny_release_entry.name] = replace(tiny_release_entry, release_url=path.as_uri())
    model = load(tiny_release_entry.name, local_files_only=False)
    assert isinstance(model, S5Chain) and (asdzoo_home() / "models" / tiny_release_entry.name / "config.json").is_file()
    assert (asdzoo_home() / "downloads" / path.name).is_file()
    page = tmp_path / "other" / "baseline_checkpoint.zip"
    page.parent.mkdir()
    page.write_text("<html>sign in to the proxy</html>")
    ZOO[tiny_release_entry.name] = replace(tiny_release_entry, release_url=page.as_uri())
    (asdzoo_home() / "downloads" / path.name).unlink()
    import shutil

    shutil.rmtree(asdzoo_home() / "models" / tiny_release_entry.name)
    with pytest.raises(WeightsNotAvailableError, match="not a zip archive"):
        load(tiny_release_entry.name, local_files_only=False)
    assert not (asdzoo_home() / "downloads" / path.name).exists()


def test_install_names_what_a_wrong_release_file_is(tiny_release_entry, m2d_ref, tmp_path):
    d, _ = m2d_ref
    with pytest.raises(ValueError, match="tiny_m2dat_4c.ckpt: holds no m2dat_4c.ckpt / resunetk.ckpt"):
        install(d / "tiny_m2dat_4c.ckpt", tiny_release_entry.name)  # a torch checkpoint is a zip, but not the release
    with pytest.raises(FileNotFoundError, match="no such file"):
        install(tmp_path / "missing.zip", tiny_release_entry.name)
