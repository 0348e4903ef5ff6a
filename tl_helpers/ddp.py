"""Fine-tune on EuroSAT on one process or many: the same script under ``torchrun``.

Single process::

    python -m tl_helpers.ddp --epochs 3

Several processes on one machine (gloo on CPU, NCCL on GPUs), or several machines::

    torchrun --standalone --nproc_per_node=2 -m tl_helpers.ddp --epochs 3
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 --nproc_per_node=8 -m tl_helpers.ddp

Every rank trains on its own shard of each epoch (``DistributedSampler``); the global
batch size stays ``--batch-size`` (each of N ranks takes ``batch_size // N``), so
results match a single-process run closely. Rank 0 writes ``--out`` (JSON) and the
``--checkpoint`` (the unwrapped model's keys, no ``module.`` prefix), which one process
or another number of ranks can ``--resume`` from.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from tl_helpers import data, models, train
from tl_helpers.device import get_device, pin_memory_for

__all__ = ["main", "wrap_model"]


def _setup() -> tuple[int, int, torch.device]:
    """Initialise the process group when launched by torchrun; return (rank, world size, device)."""
    if "RANK" not in os.environ:
        return 0, 1, get_device()
    use_cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def wrap_model(model: torch.nn.Module, device: torch.device, *, channels_last: bool) -> torch.nn.Module:
    """Move ``model`` to ``device`` and its memory format, *then* wrap it in DDP (when a process group is up).

    The order matters: DDP registers the parameters' layout when it wraps them, so a
    conversion to channels_last afterwards leaves its gradient buckets mismatched. ``fit``
    checks a wrapped model instead of converting it.
    """
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if not (dist.is_available() and dist.is_initialized()):
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tl_helpers.ddp", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size (split across ranks)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--train-per-class", type=int, default=500, help="use a balanced slice of the training split")
    p.add_argument("--val-per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (CPU)")
    p.add_argument("--out", default=None, help="write the result JSON here (rank 0)")
    p.add_argument("--checkpoint", default=None, help="save a checkpoint here after every epoch (rank 0)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rank, world, device = _setup()
    try:
        if rank == 0:  # prepare/extract/cache once, then the other ranks read the caches
            splits = data.load_eurosat(("train", "val"), seed=0, progress=False)
        if world > 1:
            dist.barrier()
        if rank != 0:
            splits = data.load_eurosat(("train", "val"), seed=0, progress=False)
        train_data = (
            splits["train"].per_class(args.train_per_class, seed=args.seed)
            if args.train_per_class < 500
            else splits["train"]
        )
        val_data = (
            splits["val"].per_class(args.val_per_class, seed=args.seed) if args.val_per_class < 100 else splits["val"]
        )

        torch.manual_seed(args.seed)  # identical initial head on every rank (DDP also broadcasts)
        model = models.load_backbone("efficientnet_lite0", num_classes=10)
        pre = models.get_preprocessing(model)
        if args.batch_size % world:
            raise ValueError(f"--batch-size {args.batch_size} must be divisible by the number of processes {world}")
        per_rank = args.batch_size // world
        on_gpu = device.type == "cuda"  # uint8 batches, pinned; converted on the GPU by fit
        base = data.make_loader(
            train_data,
            batch_size=per_rank,
            mean=pre.mean,
            std=pre.std,
            image_size=args.image_size,
            train=True,
            seed=args.seed,
            device=device,
            on_device=on_gpu,
        )
        if world > 1:
            sampler = DistributedSampler(
                base.dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True
            )
            train_loader = DataLoader(
                base.dataset,
                batch_size=per_rank,
                sampler=sampler,
                drop_last=True,
                collate_fn=base.collate_fn,
                pin_memory=pin_memory_for(device),
            )
        else:
            train_loader = base
        val_loader = data.make_loader(
            val_data,
            batch_size=256,
            mean=pre.mean,
            std=pre.std,
            image_size=args.image_size,
            device=device,
            on_device=on_gpu,
        )
        channels_last = device.type in ("cuda", "cpu")  # fit's default, applied before wrapping
        net = wrap_model(model, device, channels_last=channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=args.lr)
        t0 = time.perf_counter()
        history = train.fit(
            net,
            train_loader,
            val_loader,
            opt,
            epochs=args.epochs,
            device=device,
            seed=args.seed,
            progress=rank == 0,
            channels_last=channels_last,
            checkpoint=args.checkpoint,
            resume=args.resume,
        )
        seconds = time.perf_counter() - t0
        fingerprint = models.model_fingerprint(model)
        prints = [None] * world
        if world > 1:
            dist.all_gather_object(prints, fingerprint)
        else:
            prints = [fingerprint]
        result = {
            "world_size": world,
            "device": str(device),
            "val_acc": history.val_acc,
            "train_loss": history.train_loss,
            "seconds": seconds,
            "fingerprints": prints,
            "ranks_agree": len(set(prints)) == 1,
        }
        if rank == 0:
            print(json.dumps(result))
            if args.out:
                with open(args.out, "w") as fh:
                    json.dump(result, fh)
        return 0 if result["ranks_agree"] else 1
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
