"""tests/reference.py: a missing reference folder skips locally but fails under CI=true / CI=1."""

import pytest

from reference import REFERENCE, reference_dir

MISSING = "no_such_reference_set_for_this_test"


@pytest.mark.parametrize("value", ["true", "1", "TRUE", "True"])
def test_missing_reference_fails_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="requires ../shared/reference") as info:
        reference_dir(MISSING)
    assert str(REFERENCE / MISSING) in str(info.value)


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_reference_skips_outside_ci(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="reference vectors not found") as info:
        reference_dir(MISSING)
    assert str(REFERENCE / MISSING) in str(info.value)


@pytest.mark.parametrize("value", ["true", None])
def test_present_reference_is_returned(tmp_path, monkeypatch, value):
    (tmp_path / "present").mkdir()
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert reference_dir("present", root=tmp_path) == tmp_path / "present"
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)):
        reference_dir("absent", root=tmp_path)
