"""`python -m tl_helpers adapt` and `predict` end to end, on a folder with every problem a real one has."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.helpers_adapt import make_messy_folder
from tl_helpers.adapt.run import adapt

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def cli(*args: str, cache: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**ENV, "TL_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "tl_helpers", *args], capture_output=True, text=True, env=env, **kwargs
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One CLI run on the messy folder (32 px, 2 epochs, ONNX): the folder, the output and the cache."""
    base = tmp_path_factory.mktemp("adapt")
    messy = make_messy_folder(base / "photos", large=False, solo=False)
    out, cache = base / "model", base / "cache"
    done = cli(
        "adapt", str(messy.root), "--out", str(out), "--image-size", "32", "--epochs", "2", "--onnx", "--quiet",
        cache=cache,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return messy, out, cache, done


def test_writes_model_config_and_report(run):
    messy, out, _, done = run
    assert {"model.safetensors", "config.json", "report.html", "report.md", "results.json", "model.onnx"} <= {
        p.name for p in out.iterdir()
    }
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == list(messy.classes) and config["image_size"] == 32
    assert config["recipe"]["strategy"] in {"probe", "two-phase", "fine-tune"}
    assert {"torch", "timm", "python"} <= set(config["versions"]) and config["seed"] == 0
    results = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in results["strategies"]] == ["probe", "two-phase", "fine-tune"]
    assert results["chosen"] == config["recipe"]["strategy"]
    lo, hi = results["test_interval"]
    assert lo <= results["test_accuracy"] <= hi
    report = (out / "report.md").read_text(encoding="utf-8")
    for conflict in messy.conflicts:  # the label conflict is named in the report
        assert Path(conflict).name in report
    assert "plan:" in done.stdout and "test:" in done.stdout
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".model.tmp")]


def test_predict_prints_labels_and_names_the_bad_file(run, tmp_path):
    messy, out, cache, _ = run
    good = [messy.root / f for f in sorted(messy.special.values())[:3]]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    done = cli("predict", str(out), *map(str, good), str(bad), cache=cache)
    assert done.returncode == 1
    assert "broken.jpg" in done.stderr and len(done.stdout.splitlines()) == 3
    for line in done.stdout.splitlines():
        path, label, probability = line.split("\t")
        assert label in messy.classes and 0 < float(probability) <= 1
    csv = tmp_path / "p.csv"
    done = cli("predict", str(out), str(messy.root / messy.classes[0]), str(bad), "--csv", str(csv), cache=cache)
    rows = csv.read_text(encoding="utf-8").splitlines()
    assert done.returncode == 1 and rows[0].startswith("path,label,probability")
    assert any("broken.jpg" in r for r in rows) and len(rows) >= 1 + messy.counts[messy.classes[0]]


def test_same_seed_same_numbers(run, tmp_path, monkeypatch):
    messy, out, cache, _ = run
    again = tmp_path / "again"
    monkeypatch.setenv("TL_CACHE_DIR", str(cache))  # the cache the command used
    result = adapt(messy.root, again, image_size=32, epochs=2, progress=False, log=lambda _: None)
    first = json.loads((out / "results.json").read_text())
    assert [s.val_correct for s in result.strategies] == [s["val_correct"] for s in first["strategies"]]
    assert result.chosen == first["chosen"] and result.test_accuracy == first["test_accuracy"]
    assert result.inspection["decoded"] == 0  # the second run decoded nothing: the cache by content
    a, b = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_interrupt_leaves_the_previous_output_as_it_was(run, tmp_path):
    messy, out, cache, _ = run
    target = tmp_path / "model"
    shutil.copytree(out, target)
    before = snapshot(target)
    env = {**ENV, "TL_CACHE_DIR": str(cache)}
    args = ["adapt", str(messy.root), "--out", str(target), "--image-size", "32", "--epochs", "2000", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tl_helpers", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # a job started in the background inherits SIGINT ignored (and Python then never raises
        # KeyboardInterrupt): give the child the default disposition, as a terminal's Ctrl+C finds it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        deadline = time.monotonic() + 300
        for line in proc.stdout:  # wait until training has started
            lines.append(line)
            if line.startswith("probe:") or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any(line.startswith("probe:") for line in lines), "".join(lines) + err
    assert proc.returncode == 130, err
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folder left behind


def test_unwritable_output_fails_before_any_work(run):
    messy, _, cache, _ = run
    done = cli("adapt", str(messy.root), "--out", "/proc/tl-adapt-out", "--quiet", cache=cache)
    assert done.returncode == 2 and "/proc/tl-adapt-out" in done.stderr
    assert "plan:" not in done.stdout and "usable images" not in done.stdout


def test_too_few_images_names_the_class(tmp_path):
    messy = make_messy_folder(tmp_path / "photos", large=False, solo=True)
    done = cli("adapt", str(messy.root), "--out", str(tmp_path / "m"), "--quiet", cache=tmp_path / "cache")
    assert done.returncode == 2 and "solo" in done.stderr
    assert not (tmp_path / "m").exists()
