"""The benchmark's capstone candidates keep to the baseline's training compute."""

import importlib.util
from pathlib import Path

import pytest
import torch

from tl_helpers import models

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_candidate_trains_with_no_more_compute_than_the_recipe(bench):
    train_images = 5000

    def gflop(change):
        cfg = {**bench.CAPSTONE, **change}
        return bench.recipe_gflop(cfg, train_images // cfg["batch_size"] * cfg["batch_size"])

    baseline = gflop({})
    assert 4000 < baseline < 5500  # 5 epochs x 4,992 images x 3 x 0.063 GFLOP
    for name, change in bench.CANDIDATES.items():
        assert set(change) <= set(bench.CAPSTONE), name
        assert gflop(change) <= baseline * 1.001, (name, gflop(change), baseline)
    assert bench.ADOPTED in bench.CANDIDATES.values(), "the adopted change must be one of the candidates scored"
    # head-only epochs cost a forward pass each: three of them plus four full epochs are the recipe's five
    assert gflop({"head_epochs": 3, "sizes": [64] * 4}) == pytest.approx(baseline, rel=1e-3)
    # a frozen stem and first two stages: the backward pass stops at stage 2
    assert 0.8 * baseline < gflop(bench.ADOPTED) < 0.9 * baseline


def test_the_adopted_recipe_freezes_only_the_first_stages(bench):
    model = bench.recipe_model({**bench.CAPSTONE, **bench.ADOPTED}, pretrained=False)
    trainable = set(models.trainable_parameter_names(model))
    assert not any(n.startswith(("conv_stem", "bn1", "blocks.0.", "blocks.1.")) for n in trainable)
    assert any(n.startswith("blocks.2.") for n in trainable) and "classifier.weight" in trainable
    frozen_bn, trained_bn = model.blocks[1][0].bn1, model.blocks[2][0].bn1
    before = frozen_bn.running_mean.clone(), trained_bn.running_mean.clone()
    model.train()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(frozen_bn.running_mean, before[0]), "frozen stages keep their BatchNorm statistics"
    assert not torch.equal(trained_bn.running_mean, before[1])
