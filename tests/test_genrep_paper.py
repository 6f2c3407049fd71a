"""Paper 001's GenRep systems by name (issue 11): Table 3's configurations, the fusion of §4.1, and loading them from
the encoders' official weight files, with tiny random-weight stand-ins written in each official format and put
where the real files go."""

from __future__ import annotations

import csv
import gzip
import shutil
from dataclasses import asdict

import h5py
import numpy as np
import pytest
import torch

import asdzoo
from asdzoo.cli import main
from asdzoo.hub import WeightsNotAvailableError
from asdzoo.zoo import PAPER_WEIGHT_FILES, ZOO

from conftest import TINY_BEATS
from reference import reference_dir

# Table 3 of paper 001 as printed: input, pooling, backend (distance, k, calibration), score
TABLE_3 = {
    "eat-large": ("near_only", dict(method="rdpgem", alpha=1, p=3), ("cosine", 1, "raw"), "60.93"),
    "dasheng": ("sfsoft_a05f07", dict(method="rdp", alpha=20), ("euclidean", 3, "ldn"), "60.06"),
    "openl3": ("sfsoft_a03f05", dict(method="gem", p=9), ("cosine", 3, "ldn"), "59.48"),
    "eat-as2m": ("near_only", dict(method="rdpgem", alpha=1, p=3), ("euclidean", 1, "raw"), "59.33"),
    "sslam": ("absdif_0.5", dict(method="rdpgem", alpha=9, p=3), ("cosine", 5, "ldn"), "59.06"),
    "ced-base": ("sfsoft_a05f07", dict(method="rdpgem", alpha=9, p=3), ("cosine", 20, "ldn"), "58.46"),
    "m2d-clap": ("sfsoft_a05f07", dict(method="rdpgem", alpha=9, p=3), ("cosine", 20, "ldn"), "58.28"),
    "beats": ("n_0.5f", dict(method="rdp", alpha=19), ("cosine", 3, "ldn"), "57.65"),
}
FUSION = {"eat-large": 0.55, "dasheng": 0.20, "sslam": 0.05, "eat-as2m": 0.05, "openl3": 0.15}
EAT_PRE = dict(tau=0.15, rho=0.3)  # §4.4: only the EAT family's systems use activation preprocessing


def test_registry_holds_table_3_and_the_fusion_as_printed():
    for system, (method, pooling, (metric, k, kind), score) in TABLE_3.items():
        kw = ZOO[f"genrep-{system}"].kwargs
        expected_pooling = {**pooling, **(EAT_PRE if system.startswith("eat") else {})}
        assert kw["input_method"] == method and kw["pooling"] == expected_pooling, system
        assert (kw["backend"]["metric"], kw["backend"]["k"], kw["backend"]["backend"]) == (metric, k, kind), system
        assert ZOO[f"genrep-{system}"].reported.startswith(score)
    fusion = ZOO["genrep-fusion"]
    assert fusion.kwargs["weights"] == list(FUSION.values())
    assert fusion.kwargs["members"] == [ZOO[f"genrep-{m}"].kwargs for m in FUSION]
    assert fusion.reported.startswith("63.41")


def test_list_shows_the_nine_paper_entries_with_their_reported_numbers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for system, (*_, score) in TABLE_3.items():
        block = out.split(f"genrep-{system} ", 1)[1].split("\ngenrep", 1)[0]
        assert f"reported: {score} official" in block and "needs " in block
    assert "reported: 63.41 official" in out.split("genrep-fusion ", 1)[1]


def test_without_the_files_one_error_lists_every_missing_file(tmp_path, capsys):
    with pytest.raises(WeightsNotAvailableError) as err:
        asdzoo.load("genrep-fusion")
    text = str(err.value)
    assert "5 not found" in text
    for key in ("eat-large", "dasheng-base", "sslam", "eat-as2m", "openl3-mel256-music"):
        assert f"{key}: {PAPER_WEIGHT_FILES[key].filename} (" in text
    out = tmp_path / "scores"
    assert main(["score", "genrep-fusion", "--data-root", str(tmp_path), "--out", str(out)]) == 2
    printed = capsys.readouterr().err
    assert "needs 5 encoder weight file(s)" in printed and "Traceback" not in printed and not out.exists()


def test_given_paths_are_checked_and_keys_must_be_the_entrys(tmp_path):
    with pytest.raises(WeightsNotAvailableError, match=r"eat-large: .*nothing\.pt \(given for it\) is not a file"):
        asdzoo.load("genrep-eat-large", encoder_weights={"eat-large": tmp_path / "nothing.pt"})
    with pytest.raises(ValueError, match=r"takes encoder weights \['eat-large'\], not \['dasheng-base'\]"):
        asdzoo.load("genrep-eat-large", encoder_weights={"dasheng-base": "x.pt"})
    with pytest.raises(ValueError, match="not built from encoder weight files"):
        asdzoo.load("genrep", encoder_weights={"eat-large": "x.pt"})
    assert main(["score", "genrep-eat-large", "--data-root", ".", "--out", "o", "--encoder-weights", "eat-large"]) == 2


# -- tiny stand-ins in the official formats ---------------------------------------------------------------------

TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2)


def _eat_checkpoint(path, finetuned: bool) -> None:
    """fairseq layout: ``{'cfg': {'model': sizes}, 'model': state}``; fine-tuned files prefix the encoder with
    ``model.`` and add the AudioSet head."""
    from asdzoo.encoders.eat import EAT, sincos_positions

    enc = EAT(**TINY_VIT)
    enc.modality_encoders["IMAGE"].fixed_positional_encoder.positions.copy_(sincos_positions(32, 768))
    state = enc.state_dict()
    if finetuned:
        state = {f"model.{k}": v for k, v in state.items()} | {
            "head.weight": torch.randn(527, 32),
            "head.bias": torch.zeros(527),
        }
    torch.save({"cfg": {"model": TINY_VIT}, "model": state}, path)


def _keras_openl3(path) -> None:
    """A Keras 2 ``save_weights`` HDF5 file (gzipped as in openl3's models branch) of a 4-channel OpenL3: weighted
    layers in order, conv kernels ``[3, 3, in, out]``, BN gamma/beta/moving_mean/moving_variance."""
    from asdzoo.encoders.openl3 import BN_WEIGHTS, CANONICAL_LAYERS, CONV_WEIGHTS, OpenL3Net

    state = OpenL3Net((4, 4, 4, 4)).state_dict()
    raw = path.with_suffix("")
    with h5py.File(raw, "w") as f:
        names = []
        for i, torch_name in enumerate(CANONICAL_LAYERS):
            conv = ".conv" in torch_name
            layer = f"{'conv2d' if conv else 'batch_normalization'}_{i}"
            names += [layer, f"activation_{i}"]  # weightless layers sit in between, as in the real files
            table = CONV_WEIGHTS if conv else BN_WEIGHTS
            g = f.create_group(layer)
            g.attrs["weight_names"] = np.array([f"{layer}/{k}:0".encode() for k, _ in table])
            for keras_name, key in table:
                value = state[f"{torch_name}.{key}"].numpy()
                if key == "running_var":
                    value = value + 0.5
                g.create_dataset(
                    f"{layer}/{keras_name}:0", data=value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
                )
            f.create_group(f"activation_{i}").attrs["weight_names"] = np.asarray([])
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
    path.write_bytes(gzip.compress(raw.read_bytes()))
    raw.unlink()


def _write_stand_ins(folder) -> None:
    from asdzoo.encoders.audiotransformer import CED, Dasheng
    from asdzoo.encoders.beats import BEATs

    paths = {k: folder / w.filename for k, w in PAPER_WEIGHT_FILES.items()}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    _eat_checkpoint(paths["eat-large"], finetuned=False)
    _eat_checkpoint(paths["eat-as2m"], finetuned=True)
    _eat_checkpoint(paths["sslam"], finetuned=False)
    dasheng_cfg = dict(TINY_VIT, target_length=64)
    torch.save({"model": Dasheng(**dasheng_cfg).state_dict(), "config": dasheng_cfg}, paths["dasheng-base"])
    torch.save({"model": CED(**TINY_VIT, outputdim=5).state_dict()}, paths["ced-base"])
    beats = BEATs(cfg=TINY_BEATS)
    torch.save({"cfg": asdict(beats.cfg), "model": beats.state_dict()}, paths["beats-iter3-plus-as2m"])
    tiny_clap = reference_dir("m2d_clap") / "m2d_clap_vit_base-80x1001p16x16p16kpBpTI-tiny2025" / "checkpoint-30.pth"
    shutil.copy(tiny_clap, paths["m2d-clap-2025"])
    _keras_openl3(paths["openl3-mel256-music"])


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from asdzoo.data.synth import SynthConfig, generate

    cfg = SynthConfig.from_preset(
        "easy", machines=("valve",), train_source=8, train_target=2, test_per_group=3, seconds=1.5, seed=0
    )
    return generate(tmp_path_factory.mktemp("paper") / "t2", cfg, workers=1, progress=False)


def _scores(folder) -> dict[str, float]:
    out = {}
    for f in sorted(folder.glob("anomaly_score_*.csv")):
        out.update({name: float(v) for name, v in csv.reader(f.open())})
    return out


def test_every_paper_entry_scores_the_built_in_set_from_stand_in_weights(tiny_root, isolated_home, tmp_path):
    from asdzoo.scoring.fusion import zalign
    from asdzoo.tasks.task2 import fit_and_score, load_machine

    _write_stand_ins(isolated_home / "weights")
    scores = {}
    for system in [*TABLE_3, "fusion"]:
        out = tmp_path / system
        assert main(["score", f"genrep-{system}", "--data-root", str(tiny_root), "--out", str(out), "--quiet"]) == 0
        scores[system] = _scores(out)
        values = np.array(list(scores[system].values()))
        assert len(values) == 12 and np.isfinite(values).all() and values.std() > 0, system
    # the fusion is eq. 18 over the members' eq. 17-aligned scores (leave-one-out training-normal statistics)
    data = load_machine(tiny_root, "valve")
    names = [c.name for c in data.test]
    fused = 0
    for member, weight in FUSION.items():
        test, train = fit_and_score(asdzoo.load(f"genrep-{member}"), data)
        assert np.allclose(test, [scores[member][n] for n in names], rtol=1e-9, atol=1e-12)
        fused = fused + weight * zalign(test, train)
    assert np.allclose([scores["fusion"][n] for n in names], fused, rtol=1e-9, atol=1e-12)
    # the same files found through --weights-dir and --encoder-weights instead of the store
    moved = tmp_path / "elsewhere"
    shutil.move(isolated_home / "weights", moved)
    eat = moved / PAPER_WEIGHT_FILES["eat-large"].filename
    args = ["score", "genrep-eat-large", "--data-root", str(tiny_root), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "by_dir"), "--weights-dir", str(moved)]) == 0
    assert main([*args, "--out", str(tmp_path / "by_key"), "--encoder-weights", f"eat-large={eat}"]) == 0
    assert _scores(tmp_path / "by_dir") == _scores(tmp_path / "by_key") == scores["eat-large"]
