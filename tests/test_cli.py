import subprocess
import sys
import zipfile

from tests.helpers import make_fake_eurosat
from tl_helpers import archive as archive_mod
from tl_helpers import cli, data
from tl_helpers.files import sha256_file


def test_data_prepare_on_fake_archive(isolated_env, no_network, tmp_path, monkeypatch, capsys):
    src = make_fake_eurosat(tmp_path / "src", per_class=12)
    archive = tmp_path / "EuroSAT_RGB.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*.jpg")):
            zf.write(f, "2750/" + str(f.relative_to(src)))
    monkeypatch.setattr(data, "make_split", lambda s, seed=0: data.Split(s[:40], s[40:60], s[60:]))
    monkeypatch.setattr(archive_mod, "KNOWN_SHA256", {sha256_file(archive): "fake"})
    assert cli.main(["data", "prepare", "--archive", str(archive), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "EuroSAT ready" in out and "train    40 images" in out
    assert len(list((isolated_env / "cache").glob("eurosat-*.pt"))) == 3


def test_data_prepare_bad_input_is_one_clear_line(isolated_env, tmp_path, capsys):
    assert cli.main(["data", "prepare", "--archive", str(tmp_path / "nope.zip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.zip does not exist" in err[0]
    bad = tmp_path / "EuroSAT_RGB.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert cli.main(["data", "prepare", "--archive", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matches no known EuroSAT release" in err[0]
    assert not (isolated_env / "eurosat" / "2750").exists()


def test_doctor_not_ready_without_data(isolated_env, capsys):
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "OK weights" in out and "!! data" in out and "NOT READY" in out


def test_doctor_ready_with_data(isolated_env, no_network, monkeypatch, capsys):
    make_fake_eurosat(isolated_env / "eurosat" / "2750", per_class=2)
    monkeypatch.setattr(data, "EUROSAT_NUM_IMAGES", 20)
    assert cli.main(["doctor"]) == 0
    assert "READY" in capsys.readouterr().out


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "tl_helpers", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "doctor" in r.stdout and "data" in r.stdout
