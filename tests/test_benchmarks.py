"""The benchmark's capstone candidates keep to the baseline's training compute."""

import importlib.util
from pathlib import Path

import pytest

from tl_helpers import models

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_candidate_trains_with_no_more_compute_than_the_recipe(bench):
    model = models.load_backbone("efficientnet_lite0", pretrained=False, num_classes=10)
    train_images = 5000

    def gflop(change):
        cfg = {**bench.CAPSTONE, **change}
        per_epoch = train_images // cfg["batch_size"] * cfg["batch_size"]
        return models.training_flops(model, cfg["sizes"], per_epoch) / 1e9

    baseline = gflop({})
    assert 4000 < baseline < 5500  # 5 epochs x 4,992 images x 3 x 0.063 GFLOP
    for name, change in bench.CANDIDATES.items():
        assert set(change) <= set(bench.CAPSTONE), name
        assert gflop(change) <= baseline * 1.001, (name, gflop(change), baseline)
