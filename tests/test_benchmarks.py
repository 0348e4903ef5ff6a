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


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _loader(n=8):
    from tl_helpers.data import ImageTensors, make_loader

    images = ImageTensors(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8), torch.arange(n) % 10, ["x"] * n)
    return make_loader(images, batch_size=4, train=True, image_size=16)


def test_models_and_batches_are_moved_to_the_measured_device(bench, monkeypatch):
    """On a device other than the CPU ('meta': shapes only), a model left on the CPU would fail the forward pass."""
    monkeypatch.setattr(bench.models, "load_backbone", lambda *a, **k: _Tiny())
    meta = torch.device("meta")
    fresh = bench.fresh_model(meta)
    assert {p.device.type for p in fresh.parameters()} == {"meta"}
    assert fresh.conv.weight.is_contiguous(memory_format=torch.channels_last)
    model = _Tiny()  # on the CPU: bare_loop moves it
    seen = []
    model.conv.register_forward_pre_hook(lambda _m, args: seen.append(args[0].device.type))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bench.bare_loop(model, _loader(), opt, 2, meta, precision=bench.dev.choose_precision(meta, False))
    assert seen == ["meta", "meta"] and {p.device.type for p in model.parameters()} == {"meta"}


def test_timers_wait_for_the_device(bench, monkeypatch):
    calls = []
    monkeypatch.setattr(bench.dev, "synchronize", lambda d: calls.append(torch.device(d).type))
    model = _Tiny()
    bench.bare_loop(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1), 2, torch.device("cpu"))
    assert calls == ["cpu", "cpu"]  # before the timer starts and before it stops (a no-op on the CPU itself)


def test_both_sides_of_fit_over_bare_run_at_the_same_precision(bench, monkeypatch):
    """On a GPU fit's default is autocast: the hand-written loop it is compared with must use it too."""
    gpu = torch.device("cuda")  # never touched: the models, loaders and loops are fakes
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench.torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(bench, "fresh_model", lambda device, channels_last=True: _Tiny())
    monkeypatch.setattr(bench, "train_loader", lambda *a, **k: None)
    seen = {}

    def fake_fit(m, loader, val, opt, **kw):
        seen["fit"] = bench.dev.choose_precision(kw["device"], kw["amp"])
        return bench.train.History(epoch_time=[1.0])

    def fake_bare(m, loader, opt, steps, device, channels_last=True, precision=None):
        seen["bare"] = precision
        return 1.0

    monkeypatch.setattr(bench.train, "fit", fake_fit)
    monkeypatch.setattr(bench, "bare_loop", fake_bare)
    ratio, _ = bench.bench_fit_over_bare(None, gpu, steps=1)
    assert ratio == 1.0 and seen["bare"] == seen["fit"] and seen["fit"].dtype == torch.bfloat16


def test_bare_loop_runs_under_the_precision_it_is_given(bench):
    model = _Tiny()
    dtypes = []
    model.fc.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cpu = torch.device("cpu")
    bench.bare_loop(model, _loader(), opt, 1, cpu, precision=bench.dev.choose_precision(cpu, True))
    bench.bare_loop(model, _loader(), opt, 1, cpu)  # fit's default on the CPU: fp32
    assert dtypes == [torch.bfloat16, torch.float32]


def _run_benchmark(script: str, out: Path, *args: str) -> dict:
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--out", str(out), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize(("script", "ratios"), [
    ("depthwise.py", ("speedup",)),
    ("pointwise.py", ("train_speedup", "infer_speedup")),
])  # fmt: skip
def test_convolution_benchmarks_time_both_arms_and_write_their_ratios(tmp_path, script, ratios):
    result = _run_benchmark(script, tmp_path / "out.json", "--sizes", "32", "--steps", "1", "--rounds", "1")
    (row,) = result["rows"]
    assert row["size"] == 32 and result["threads"] >= 1
    for key in ratios:
        assert row[key] > 0 and all(v > 0 for k, v in row.items() if k.endswith("img_s"))


@pytest.mark.real_data("sst2")
def test_optimizer_benchmark_times_both_updates_for_both_models(tmp_path):
    result = _run_benchmark("optimizer.py", tmp_path / "out.json", "--steps", "1", "--rounds", "1")
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"efficientnet_lite0", "all-MiniLM-L6-v2"}
    assert 3e6 < rows["efficientnet_lite0"]["parameters"] < 5e6 and 2e7 < rows["all-MiniLM-L6-v2"]["parameters"] < 3e7
    for row in rows.values():
        assert min(row["foreach_step_ms"], row["fused_step_ms"], row["fused_train_step_ms"]) > 0
