"""EfficientNet-Lite0 with PyTorch's 1x1 convolutions vs ``tl_helpers.pointwise``'s matrix products.

At the small sizes the course trains at, most of the network's 1x1 convolutions meet 1x1 to 4x4
feature maps, where oneDNN's convolution is slower than ``F.linear`` on the same numbers.
``load_backbone`` swaps in :mod:`tl_helpers.pointwise`; this times AdamW training steps and inference
passes (batch 32, channels_last, the course's threads, the depthwise swap on in both arms) with the
plain modules and with the swapped ones, alternating ``--rounds`` times, and prints images/s and the
ratios for each size. Writes ``benchmarks/pointwise.json``. Run it alone on the machine.

    python benchmarks/pointwise.py                          # ≈ 2 min on a 2-core CPU
    python benchmarks/pointwise.py --sizes 32 --steps 2     # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tl_helpers.device import get_device
from tl_helpers.models import load_backbone
from tl_helpers.pointwise import use_plain_pointwise

REPO = Path(__file__).resolve().parents[1]


def make_model(fast: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", pretrained=False, num_classes=10)
    if not fast:
        use_plain_pointwise(model)  # back to PyTorch's nn.Conv2d
    return model.to(memory_format=torch.channels_last)


def images_per_second(fast: bool, size: int, steps: int, batch: int) -> tuple[float, float]:
    """(training images/s, inference images/s)."""
    model = make_model(fast).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    train = steps * batch / (time.perf_counter() - start)
    model.eval()
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(3 * steps):
            model(x)
        infer = 3 * steps * batch / (time.perf_counter() - start)
    return train, infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64, 96])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "pointwise.json")
    args = parser.parse_args()
    get_device("cpu")  # the course's thread settings
    rows = []
    for size in args.sizes:
        plain, fast = [], []
        for _ in range(args.rounds):  # alternate, so that a slow moment of the machine hits both
            plain.append(images_per_second(False, size, args.steps, args.batch))
            fast.append(images_per_second(True, size, args.steps, args.batch))
        row = {
            "size": size,
            "plain_train_img_s": max(p[0] for p in plain),
            "fast_train_img_s": max(f[0] for f in fast),
            "plain_infer_img_s": max(p[1] for p in plain),
            "fast_infer_img_s": max(f[1] for f in fast),
        }
        row["train_speedup"] = row["fast_train_img_s"] / row["plain_train_img_s"]
        row["infer_speedup"] = row["fast_infer_img_s"] / row["plain_infer_img_s"]
        rows.append(row)
        print(f"{size:4d} px: training {row['plain_train_img_s']:6.1f} -> {row['fast_train_img_s']:6.1f} img/s "
              f"({row['train_speedup']:.2f}x), inference {row['plain_infer_img_s']:6.1f} -> "
              f"{row['fast_infer_img_s']:6.1f} img/s ({row['infer_speedup']:.2f}x)")  # fmt: skip
    result = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "batch": args.batch,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
