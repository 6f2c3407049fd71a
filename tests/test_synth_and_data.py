import csv
from collections import Counter

import numpy as np
import soundfile as sf
import torch

from asdzoo.data.synth import SynthConfig, checksum, generate
from asdzoo.data.task2 import Task2DataModule, Task2Dataset, collate_clips, list_machines, scan_clips

from thresholds import check

TINY = dict(machines=("gearbox",), train_source=3, train_target=1, test_per_group=1, seconds=1.0)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = checksum(generate(tmp_path / "a", SynthConfig(**TINY, seed=3), workers=2, progress=False))
    b = checksum(generate(tmp_path / "b", SynthConfig(**TINY, seed=3), workers=1, progress=False))
    c = checksum(generate(tmp_path / "c", SynthConfig(**TINY, seed=4), workers=2, progress=False))
    assert a == b and a != c


def test_layout_names_and_attributes(synth_root):
    assert list_machines(synth_root) == ["fan", "valve"]
    train, test = scan_clips(synth_root, "fan", "train"), scan_clips(synth_root, "fan", "test")
    assert Counter(c.domain for c in train) == {"source": 30, "target": 6}
    assert Counter((c.domain, c.label) for c in test) == {
        (d, lab): 10 for d in ("source", "target") for lab in ("normal", "anomaly")
    }
    assert all(c.meta.attribute_values.keys() == {"spd", "room", "noise"} for c in train + test)
    src_speeds = {c.meta.attribute_values["spd"] for c in train if c.domain == "source"}
    tgt_speeds = {c.meta.attribute_values["spd"] for c in train if c.domain == "target"}
    assert not src_speeds & tgt_speeds  # domain shift: target runs at unseen speeds
    rows = list(csv.DictReader((synth_root / "fan" / "attributes_00.csv").read_text().splitlines()))
    assert len(rows) == 36 + 40 and rows[0]["file_name"].startswith("fan/train/section_00_source_train_normal_0000")
    info = sf.info(str(train[0].path))
    assert (info.channels, info.samplerate, info.subtype) == (2, 16000, "PCM_16")


def test_near_mic_hears_the_machine_better_than_far(synth_root):
    clips = [sf.read(str(c.path))[0] for c in scan_clips(synth_root, "fan", "train")]
    check("synth: lowest near / far level ratio", min(x[:, 0].std() / x[:, 1].std() for x in clips))
    # the far mic sits next to the interferer: its signal correlates less with the near one
    check("synth: highest near-far correlation", max(abs(np.corrcoef(x.T)[0, 1]) for x in clips))


def test_anomalies_differ_from_normals_more_than_normals_differ(synth_root):
    from asdzoo.audio.features import log_mel

    def feats(label):
        clips = [c for c in scan_clips(synth_root, "valve", "test") if c.label == label and c.domain == "source"]
        return torch.stack([log_mel(Task2Dataset([c])[0]["wave"][0], 16000).mean(0) for c in clips])

    normal, anomal = feats("normal"), feats("anomaly")
    centre = normal.mean(0)
    assert (anomal - centre).norm(dim=1).mean() > (normal - centre).norm(dim=1).mean()


def test_collate_keeps_valid_lengths(synth_root):
    ds = Task2Dataset(scan_clips(synth_root, "fan", "train")[:2])
    items = [ds[0], ds[1]]
    items[1]["wave"] = items[1]["wave"][:, :20000]
    items[1]["length"] = 20000
    b = collate_clips(items)
    assert b["wave"].shape == (2, 2, 48000) and b["lengths"].tolist() == [48000, 20000]
    assert (b["wave"][1, :, 20000:] == 0).all()


def test_datamodule_oversamples_target_and_labels_classes(synth_root):
    dm = Task2DataModule(
        str(synth_root), batch_size=8, target_oversample=10.0, class_by="attribute", segment_seconds=2.0
    )
    dm.setup("fit")
    assert dm.num_classes == len({(c.machine, c.attributes) for c in dm.train_set.clips})
    torch.manual_seed(0)
    domains = torch.cat([b["domain"] for b in dm.train_dataloader()])
    # 12 of 72 train clips are target; with 10x weight they make up ~67 % of draws instead of 17 %
    assert domains.float().mean() > 0.4
    batch = next(iter(dm.train_dataloader()))
    assert batch["wave"].shape[-1] == 32000  # random 2 s crops
    assert len(dm.val_set) == 80
