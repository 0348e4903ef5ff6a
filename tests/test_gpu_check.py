"""`make gpu-check` (benchmarks/gpu_check.py): one line and a JSON without CUDA; the data subset it can carry."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_prints_one_line_writes_the_json_and_succeeds(gpu_check, tmp_path):
    out = tmp_path / "nested" / "gpu.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")  # no GPU, even on a machine with one
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [gpu_check.SKIP_LINE] == ["no CUDA GPU: skipping the CUDA parts"]
    result = json.loads(out.read_text())
    assert result["cuda"] is False and result["skipped"] == gpu_check.SKIP_LINE and "torch" in result


def test_the_carried_subset_holds_exactly_the_split(gpu_check, fake_root, tmp_path, monkeypatch):
    from tl_helpers import data

    monkeypatch.setenv("TL_DATA_DIR", str(fake_root.parents[1]))
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    sizes = {"train_per_class": 5, "val_per_class": 2, "test_per_class": 3}
    out = gpu_check.make_subset(tmp_path / "subset", **sizes)
    assert len(list((out / "eurosat" / "2750").rglob("*.jpg"))) == 10 * (5 + 2 + 3)
    expected = data.make_split(data.scan_folder(fake_root).samples, **sizes)
    assert json.loads((out / gpu_check.SPLIT_FILE).read_text())["digest"] == expected.digest()
    monkeypatch.delenv("TL_DATA_DIR")
    splits = gpu_check.load_splits(out)
    for name in ("train", "val", "test"):
        assert splits[name].files == [rel for rel, _ in expected[name]]
        assert splits[name].labels.tolist() == [label for _, label in expected[name]]
    original = data.decode_samples(fake_root, expected["test"], cache=tmp_path / "c", progress=False)
    assert (splits["test"].images == original.images).all()  # byte-identical copies of the JPEGs


def test_the_cuda_run_asks_for_every_part(gpu_check, monkeypatch, tmp_path):
    """With CUDA (faked), the tests run under TL_REQUIRE_CUDA=1, then the capstone and the quick benchmark."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    calls = []
    monkeypatch.setattr(
        gpu_check, "device_figures", lambda: {"device_name": "fake", "capability": "9.0", "precision": "bf16"}
    )

    def fake_run(cmd, cwd=None, env=None, timeout=None):
        calls.append((cmd, env))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    monkeypatch.setattr(gpu_check, "run_capstone", lambda d: {"test_acc": 0.97, "wall_s": 20.0, "images_per_s": 1e4})
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--out", str(out), "--data-dir", str(tmp_path)]) == 0
    (tests_cmd, tests_env), (bench_cmd, bench_env) = calls
    assert tests_env["TL_REQUIRE_CUDA"] == "1" and gpu_check.TEST_SELECTION in tests_cmd
    assert {"tests/test_device.py", "tests/test_train.py", "tests/test_ddp.py"} <= set(tests_cmd)
    assert bench_cmd[-3:] == ["--quick", "--out", str(tmp_path / "bench_quick.json")]
    assert bench_env["TL_DATA_DIR"] == str(tmp_path)
    summary = json.loads(out.read_text())["summary"]
    assert summary["capstone_test_acc"] == 0.97 and summary["ok"] and summary["precision"] == "bf16"
