import numpy as np
import pytest
import soundfile as sf
import torch

from asdzoo.audio.io import AudioError, read_audio, write_audio
from asdzoo.data.task2 import channel_count, require_two_channels, scan_clips


def _wav(path, channels=2, sr=16000, n=1600, subtype="PCM_16", data=None):
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (n, channels)) if data is None else data
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def test_reads_stereo_as_channels_first(tmp_path):
    x = np.stack([np.linspace(-0.5, 0.5, 800), np.zeros(800)], axis=1)
    w = read_audio(_wav(tmp_path / "a.wav", data=x), channels=2, sample_rate=16000)
    assert w.shape == (2, 800)
    assert torch.allclose(w[0], torch.tensor(x[:, 0], dtype=torch.float32), atol=1 / 32768)
    assert w[1].abs().max() == 0  # channel 1 is the far mic: stays where it was written


@pytest.mark.parametrize("channels", [1, 3])
def test_wrong_channel_count_names_file(tmp_path, channels):
    p = _wav(tmp_path / f"c{channels}.wav", channels=channels)
    with pytest.raises(AudioError, match=rf"c{channels}\.wav: expected 2 channels \(near, far\), got {channels}"):
        read_audio(p, channels=2)


def test_wrong_sample_rate_and_resample(tmp_path):
    p = _wav(tmp_path / "sr.wav", sr=32000, n=3200)
    with pytest.raises(AudioError, match=r"sr\.wav: sample rate is 32000 Hz, expected 16000"):
        read_audio(p, sample_rate=16000)
    assert read_audio(p, sample_rate=16000, resample=True).shape == (2, 1600)


def test_empty_corrupt_nan_missing(tmp_path):
    empty = _wav(tmp_path / "empty.wav", n=0)
    with pytest.raises(AudioError, match="empty.wav: empty audio"):
        read_audio(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(AudioError, match="corrupt.wav: corrupt or unreadable"):
        read_audio(corrupt)
    nan = np.zeros((100, 2), dtype=np.float32)
    nan[5, 1] = np.nan
    with pytest.raises(AudioError, match="nan.wav: audio contains NaN"):
        read_audio(_wav(tmp_path / "nan.wav", data=nan, subtype="FLOAT"))
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        read_audio(tmp_path / "missing.wav")


def test_write_audio_is_atomic_and_roundtrips(tmp_path):
    w = torch.linspace(-0.5, 0.5, 200).repeat(2, 1)
    write_audio(tmp_path / "o.wav", w, 16000)
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]  # no temporary left behind
    assert torch.allclose(read_audio(tmp_path / "o.wav"), w, atol=1 / 32768)


def _layout(root, files):
    for rel, ch in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        _wav(p, channels=ch)


def test_mixed_channel_counts_in_one_root_is_an_error(tmp_path):
    _layout(
        tmp_path,
        [
            ("fan/train/section_00_source_train_normal_0000_a_1.wav", 2),
            ("fan/train/section_00_source_train_normal_0001_a_1.wav", 1),
        ],
    )
    with pytest.raises(AudioError, match="normal_0001_a_1.wav: has 1 channel.*mixed channel counts"):
        channel_count(scan_clips(tmp_path, "fan", "train"))


def test_two_channel_methods_refuse_mono_sets(tmp_path):
    _layout(tmp_path, [("fan/train/section_00_source_train_normal_0000_a_1.wav", 1)])
    clips = scan_clips(tmp_path, "fan", "train")
    assert channel_count(clips) == 1
    with pytest.raises(AudioError, match="needs two-channel.*mono"):
        require_two_channels(clips, "absdif_1")


def test_missing_folders_named(tmp_path):
    (tmp_path / "fan" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"fan/test: missing folder"):
        scan_clips(tmp_path, "fan", "test")
    with pytest.raises(FileNotFoundError, match=r"fan/train: no \.wav files"):
        scan_clips(tmp_path, "fan", "train")
