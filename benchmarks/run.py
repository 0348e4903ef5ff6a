"""Course benchmarks: ratios measured side by side in one run, written to benchmarks/results.json.

    python benchmarks/run.py            # everything (≈ 20 min on a 2-core CPU, most of it the course run)
    python benchmarks/run.py --quick    # skip the capstone table and the whole-course run

Each comparison interleaves its variants (A, B, A, B, ...) and keeps the best
time of each, so a noisy shared machine distorts ratios far less than absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tl_helpers import data, features, models, train  # noqa: E402
from tl_helpers import device as dev  # noqa: E402


def best_of(fns: dict[str, Callable[[], float]], repeats: int = 3) -> dict[str, float]:
    """Interleave the variants; each returns seconds; keep each one's best."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            best[k] = min(best[k], fn())
    return best


def bare_loop(model, loader, opt, steps, device, channels_last=True):
    """The hand-written loop fit() is compared with."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    it = iter(loader)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        x = x.to(device, memory_format=torch.channels_last) if channels_last else x.to(device)
        loss = loss_fn(model(x), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def fresh_model(channels_last=True):
    torch.manual_seed(0)
    m = models.load_backbone("efficientnet_lite0", num_classes=10)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def bench_fit_over_bare(train_data, device, steps=30):
    loader = data.make_loader(train_data, batch_size=64, train=True)

    def run_fit():
        m = fresh_model()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        h = train.fit(m, loader, None, opt, epochs=1, device=device, progress=False, max_steps_per_epoch=steps)
        return h.epoch_time[0]

    def run_bare():
        m = fresh_model()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        return bare_loop(m, loader, opt, steps, device)

    t = best_of({"fit": run_fit, "bare": run_bare}, repeats=5)
    return t["bare"] / t["fit"], t


def bench_data(train_data, root, device, steps=20):
    """Data time as a share of step time: tensor cache vs ImageFolder + JPEG decoding."""
    import torchvision
    from torchvision import transforms as T

    cached = data.make_loader(train_data, batch_size=64, train=True)
    folder = torchvision.datasets.ImageFolder(
        str(root), transform=T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    )
    subset = torch.utils.data.Subset(
        folder, torch.randperm(len(folder), generator=torch.Generator().manual_seed(0))[: 64 * steps].tolist()
    )
    jpeg = torch.utils.data.DataLoader(subset, batch_size=64, shuffle=False, num_workers=0)

    def data_time(loader):
        t0 = time.perf_counter()
        for _ in zip(range(steps), loader):
            pass
        return time.perf_counter() - t0

    t = best_of({"cache": lambda: data_time(cached), "jpeg": lambda: data_time(jpeg)})
    m = fresh_model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    step_total = min(bare_loop(m, cached, opt, steps, device) for _ in range(2))
    return t["cache"] / step_total, t["jpeg"] / t["cache"], t, step_total


def bench_channels_last(train_data, device, steps=10):
    x = data.BatchTransform((0.5,) * 3, (0.5,) * 3, 64).transform(train_data.images[:128])

    def feats(cl):
        m = fresh_model(cl).eval()
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        with torch.no_grad():
            m(xx)
            t0 = time.perf_counter()
            for _ in range(3):
                m(xx)
        return time.perf_counter() - t0

    loader = data.make_loader(train_data, batch_size=64, train=True)

    def trainstep(cl):
        m = fresh_model(cl)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        bare_loop(m, loader, opt, 2, device, channels_last=cl)
        return bare_loop(m, loader, opt, steps, device, channels_last=cl)

    tf = best_of({"cl": lambda: feats(True), "contig": lambda: feats(False)})
    tt = best_of({"cl": lambda: trainstep(True), "contig": lambda: trainstep(False)}, repeats=2)
    return tf["contig"] / tf["cl"], tt["contig"] / tt["cl"]


def bench_feature_cache(train_data, device):
    m = models.load_backbone("efficientnet_lite0")
    sub = train_data.per_class(100)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        features.cached_features(m, sub, cache=d, device=device, progress=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        features.cached_features(m, sub, cache=d, device=device, progress=False)
        second = time.perf_counter() - t0
    return first / second, first, second


def bench_flops(device):
    from torch.utils.flop_counter import FlopCounterMode

    m = fresh_model().eval()
    out = {}
    for size in (64, 96, 128, 224):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last))
        out[size] = fc.get_total_flops()
    a = torch.randn(1024, 1024)
    torch.mm(a, a)
    t0 = time.perf_counter()
    for _ in range(20):
        torch.mm(a, a)
    matmul = 20 * 2 * 1024**3 / (time.perf_counter() - t0)
    return out, matmul


def capstone_rows(splits, device):
    rows = []
    test_loader = lambda size: data.make_loader(splits["test"], batch_size=256, image_size=size)
    for size in (64, 96):
        m = models.load_backbone("efficientnet_lite0")
        with tempfile.TemporaryDirectory() as cache:  # a cold cache: the wall time includes the extraction
            t0 = time.perf_counter()
            Xtr, ytr = features.cached_features(
                m, splits["train"], image_size=size, name="train", cache=cache, device=device, progress=False
            )
            Xte, yte = features.cached_features(
                m, splits["test"], image_size=size, name="test", cache=cache, device=device, progress=False
            )
            clf = features.fit_logistic_regression(Xtr, ytr)
            acc = clf.score(Xte.numpy(), yte.numpy())
            wall = time.perf_counter() - t0
        rows.append(
            {
                "method": "linear probe (cached features)",
                "image_size": size,
                "test_acc": acc,
                "wall_s": wall,
                "images_per_s": (len(Xtr) + len(Xte)) / wall,
            }
        )
    for method, pretrained in (("fine-tune", True), ("from scratch", False)):
        torch.manual_seed(0)
        m = models.load_backbone("efficientnet_lite0", pretrained=pretrained, num_classes=10)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        epochs = 5
        loader = data.make_loader(splits["train"], batch_size=64, train=True)
        # notebook 06's recipe: AdamW 1e-3, half an epoch of warm-up, cosine to zero
        sched = train.warmup_cosine(opt, total_steps=epochs * len(loader), warmup_steps=len(loader) // 2)
        h = train.fit(m, loader, None, opt, epochs=epochs, device=device, scheduler=sched, progress=False)
        acc = train.evaluate(m, test_loader(64), device).accuracy
        rows.append(
            {
                "method": f"{method} (5 epochs)",
                "image_size": 64,
                "test_acc": acc,
                "wall_s": h.total_time,
                "images_per_s": sum(h.images_per_sec) / len(h.images_per_sec),
            }
        )
    return rows


def course_seconds():
    import nbformat
    from nbclient import NotebookClient

    total, per = 0.0, {}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
        per[path.name] = time.perf_counter() - t0
        total += per[path.name]
    return total, per


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="skip the capstone table and the whole-course run")
    p.add_argument("--no-course", action="store_true", help="skip only the whole-course run (≈ 9 min)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"))
    args = p.parse_args()
    device = dev.get_device()
    splits = data.load_eurosat(progress=False)
    root = data.find_eurosat()
    res: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": dev.describe(device),
            "platform": platform.platform(),
            "python": platform.python_version(),
        }
    }
    print("benchmarking on", res["machine"])
    res["fit_over_bare"], t = bench_fit_over_bare(splits["train"], device)
    print(f"fit throughput / bare loop: {res['fit_over_bare']:.3f} (target >= 0.97)  {t}")
    share, speedup, t, step = bench_data(splits["train"], root, device)
    res["data_share_of_step"], res["tensor_cache_vs_jpeg_speedup"] = share, speedup
    print(
        f"data share of a training step (tensor cache): {share:.1%} (target <= 5%); "
        f"cache vs ImageFolder+JPEG data loading: {speedup:.1f}x"
    )
    res["channels_last_speedup_features"], res["channels_last_speedup_train"] = bench_channels_last(
        splits["train"], device
    )
    print(
        f"channels_last speed-up: features {res['channels_last_speedup_features']:.2f}x, "
        f"training {res['channels_last_speedup_train']:.2f}x"
    )
    res["features_cached_speedup"], first, second = bench_feature_cache(splits["train"], device)
    print(
        f"feature cache: second run {res['features_cached_speedup']:.0f}x faster "
        f"({first:.2f}s -> {second:.3f}s; target >= 10x)"
    )
    flops, matmul = bench_flops(device)
    res["flops_per_image"] = flops
    res["matmul_flops_per_s"] = matmul
    print(
        f"forward FLOPs per image: {{size: GFLOP}} = { {k: round(v / 1e9, 3) for k, v in flops.items()} }; "
        f"matmul throughput {matmul / 1e9:.1f} GFLOP/s"
    )
    if not args.quick:
        res["capstone"] = capstone_rows(splits, device)
        for row in res["capstone"]:
            achieved = (
                3 * flops[row["image_size"]] * row["images_per_s"]
                if "fine" in row["method"] or "scratch" in row["method"]
                else flops[row["image_size"]] * row["images_per_s"]
            )
            row["fraction_of_matmul_peak"] = achieved / matmul
        print("capstone:")
        for row in res["capstone"]:
            print(
                f"  {row['method']:34s} {row['image_size']:4d}px  acc {row['test_acc']:.3f}  {row['wall_s']:6.1f}s  "
                f"{row['images_per_s']:7.0f} img/s  {row['fraction_of_matmul_peak']:.1%} of matmul peak"
            )
        if args.no_course:
            res["course_seconds"] = None
        else:
            res["course_seconds"], res["course_per_notebook"] = course_seconds()
            print(
                f"whole course, fresh kernels: {res['course_seconds']:.0f}s (target <= 900s); per notebook: "
                + ", ".join(f"{k[:2]} {v:.0f}s" for k, v in res["course_per_notebook"].items())
            )
    else:
        res["capstone"], res["course_seconds"] = [], None
    Path(args.out).write_text(json.dumps(res, indent=2, default=str))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
