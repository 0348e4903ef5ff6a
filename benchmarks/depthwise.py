"""Training steps of EfficientNet-Lite0 with PyTorch's depthwise weight gradient vs ``tl_helpers.depthwise``.

At the small sizes the course trains at, the last stages' feature maps are smaller than their 5x5
kernels, where PyTorch's CPU weight gradient for depthwise convolutions takes a slow path.
``load_backbone`` swaps in :mod:`tl_helpers.depthwise`; this times AdamW steps (batch 32,
channels_last, the course's threads) with the plain modules and with the swapped ones, alternating
``--rounds`` times, and prints images/s and the ratio for each size. Writes
``benchmarks/depthwise.json``. Run it alone on the machine.

    python benchmarks/depthwise.py                          # ≈ 2 min on a 2-core CPU
    python benchmarks/depthwise.py --sizes 48 --steps 2     # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tl_helpers.depthwise import use_plain_depthwise
from tl_helpers.device import get_device
from tl_helpers.models import load_backbone

REPO = Path(__file__).resolve().parents[1]


def make_model(fast: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", pretrained=False, num_classes=10)
    if not fast:
        use_plain_depthwise(model)  # back to PyTorch's nn.Conv2d / timm's Conv2dSame
    return model.to(memory_format=torch.channels_last).train()


def images_per_second(fast: bool, size: int, steps: int, batch: int) -> float:
    model = make_model(fast)
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
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64, 96])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "depthwise.json")
    args = parser.parse_args()
    get_device("cpu")  # the course's thread settings
    rows = []
    for size in args.sizes:
        plain, fast = [], []
        for _ in range(args.rounds):  # alternate, so that a slow moment of the machine hits both
            plain.append(images_per_second(False, size, args.steps, args.batch))
            fast.append(images_per_second(True, size, args.steps, args.batch))
        row = {"size": size, "plain_img_s": max(plain), "fast_img_s": max(fast), "speedup": max(fast) / max(plain)}
        rows.append(row)
        print(f"{size:4d} px: PyTorch's depthwise gradient {row['plain_img_s']:6.1f} img/s, "
              f"tl_helpers.depthwise {row['fast_img_s']:6.1f} img/s: {row['speedup']:.2f}x")  # fmt: skip
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
