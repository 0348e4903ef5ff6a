"""The same fine-tuning under torchrun (2 CPU processes, gloo) agrees with a single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

ARGS = ["--epochs", "3", "--train-per-class", "30", "--val-per-class", "20", "--batch-size", "32", "--threads", "1"]


def _run(cmd, out: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd + ARGS + ["--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def test_torchrun_two_processes_match_single_process(real_eurosat_archive, tmp_path):
    from tl_helpers import data

    data.load_eurosat(("train", "val"), progress=False)  # extract/cache before the ranks start
    single = _run([sys.executable, "-m", "tl_helpers.ddp"], tmp_path / "single.json")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tl_helpers.ddp",
    ]
    multi = _run(torchrun, tmp_path / "ddp.json")
    assert multi["world_size"] == 2 and single["world_size"] == 1
    assert multi["ranks_agree"] and len(set(multi["fingerprints"])) == 1
    assert single["val_acc"][-1] > 0.5 and multi["val_acc"][-1] > 0.5  # chance is 0.1
    assert abs(single["val_acc"][-1] - multi["val_acc"][-1]) <= 0.12, (single["val_acc"], multi["val_acc"])
