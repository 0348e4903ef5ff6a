"""AdamW's update, PyTorch's default (``foreach``) vs ``fused=True``, for the course's two models.

The notebooks build their optimizers with ``fused=True``: one kernel updates every parameter, where
the default makes several passes over all of them. This times ``optimizer.step()`` alone (random
gradients) and whole training steps (forward, backward, step) for EfficientNet-Lite0 (batch 32,
64 px, channels_last) and all-MiniLM-L6-v2 (batch 16 SST-2 sentences of at least 8 words),
alternating ``--rounds`` times, and prints milliseconds and ratios. Writes
``benchmarks/optimizer.json``. Run it alone on the machine.

    python benchmarks/optimizer.py                 # ≈ 1 min on a 2-core CPU
    python benchmarks/optimizer.py --steps 2       # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from tl_helpers import text
from tl_helpers.device import get_device
from tl_helpers.models import load_backbone

REPO = Path(__file__).resolve().parents[1]


def image_case() -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", pretrained=False, num_classes=10).to(memory_format=torch.channels_last)
    x = torch.randn(32, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,))
    return model, lambda m: F.cross_entropy(m(x), y)


def text_case() -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    encoder, tokenizer = text.load_encoder(seed=0)
    model = text.TextClassifier(encoder, num_classes=2)
    data = text.load_sst2("train").balanced(16, seed=0, min_words=8)
    x, y = next(iter(text.make_text_loader(tokenizer, data, batch_size=16)))
    return model, lambda m: F.cross_entropy(m(x), y)


def milliseconds(model: torch.nn.Module, loss_of, fused: bool, steps: int) -> tuple[float, float]:
    """(ms per optimizer.step() alone, ms per training step)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=fused)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of(model).backward()
        optimizer.step()

    train_step()  # warm-up; leaves gradients for the step-only timing
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    step_only = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    return 1000 * step_only, 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "optimizer.json")
    args = parser.parse_args()
    get_device("cpu")  # the course's thread settings
    rows = []
    for name, case in (("efficientnet_lite0", image_case), ("all-MiniLM-L6-v2", text_case)):
        model, loss_of = case()
        times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.rounds):  # alternate, so that a slow moment of the machine hits both
            for fused in (False, True):
                times[fused].append(milliseconds(model, loss_of, fused, args.steps))
        best = {fused: (min(t[0] for t in ts), min(t[1] for t in ts)) for fused, ts in times.items()}
        row = {
            "model": name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "foreach_step_ms": best[False][0],
            "fused_step_ms": best[True][0],
            "foreach_train_step_ms": best[False][1],
            "fused_train_step_ms": best[True][1],
        }
        row["step_speedup"] = row["foreach_step_ms"] / row["fused_step_ms"]
        row["train_step_speedup"] = row["foreach_train_step_ms"] / row["fused_train_step_ms"]
        rows.append(row)
        print(f"{name} ({row['parameters'] / 1e6:.1f}M parameters): optimizer.step() {row['foreach_step_ms']:.1f} -> "
              f"{row['fused_step_ms']:.1f} ms ({row['step_speedup']:.1f}x); training step "
              f"{row['foreach_train_step_ms']:.0f} -> {row['fused_train_step_ms']:.0f} ms "
              f"({row['train_step_speedup']:.2f}x)")  # fmt: skip
    result = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
