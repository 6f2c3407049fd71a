import pytest

from asdzoo.data.filenames import parse_attributes, parse_clip_name


def test_dev_train_name_2026():
    c = parse_clip_name("/x/ToyCar/train/section_00_source_train_normal_0012_car_A2_spd_28V_mic_1_noise_1.wav")
    assert (c.section, c.domain, c.split, c.label, c.index) == ("00", "source", "train", "normal", 12)
    assert c.attributes == "car_A2_spd_28V_mic_1_noise_1"
    assert c.attribute_values == {"car": "A2", "spd": "28V", "mic": "1", "noise": "1"}
    assert c.is_anomaly is False


def test_dev_test_anomaly_target():
    c = parse_clip_name("section_00_target_test_anomaly_0049_id_C3_spd_6_mic_2.wav")
    assert (c.domain, c.split, c.label, c.index) == ("target", "test", "anomaly", 49)
    assert c.is_anomaly is True


def test_no_attribute_and_eval_names():
    assert parse_clip_name("section_00_source_test_normal_0003_noAttribute.wav").attribute_values == {}
    assert parse_clip_name("section_00_source_test_normal_0003.wav").attributes == ""
    e = parse_clip_name("section_00_test_0007.wav")  # 2026 eval style
    assert (e.section, e.index, e.split, e.domain, e.label) == ("00", 7, "test", None, None)
    assert parse_clip_name("section_01_0100.wav").index == 100  # 2024/2025 eval style


def test_odd_attribute_string_kept_whole():
    assert parse_attributes("weird") == {"attr": "weird"}


@pytest.mark.parametrize(
    "bad",
    [
        "noise.wav",
        "section_0_source_train_normal_0001.wav",
        "section_00_source_train_normal_0001.flac",
        "section_00_middle_train_normal_0001.wav",
    ],
)
def test_bad_names_raise_with_file_name(bad):
    with pytest.raises(ValueError, match=bad.split(".")[0]):
        parse_clip_name(bad)
