"""Distributed fine-tuning: 2 CPU processes (gloo) agree with one; rank 0 alone checkpoints, unwrapped.

The torchrun test runs ``tl_helpers.ddp`` on the real data; the others use tiny fake data
and a tiny model, with the process group started in the test (world size 1) or in two
spawned processes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from tests.test_train import TinyNet
from tl_helpers import data, ddp, train

ARGS = ["--epochs", "3", "--train-per-class", "30", "--val-per-class", "20", "--batch-size", "32", "--threads", "1"]


def _run(cmd, out: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd + ARGS + ["--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.real_data
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


def _ddp_worker(rank: int, world: int, tmp: str, root: str, backend: str) -> None:
    """One rank of a tiny DDP run: wrap (channels_last first), fit 2 epochs, checkpoint to a per-rank path."""
    torch.set_num_threads(1)
    tmp_path = Path(tmp)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=rank, world_size=world)
    try:
        device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
        tensors = data.decode_samples(root, data.scan_folder(root).samples, cache=tmp_path / f"c{rank}", progress=False)
        torch.manual_seed(42)
        model = TinyNet()
        net = ddp.wrap_model(model, device, channels_last=True)
        assert isinstance(net, DistributedDataParallel) and net.module is model
        assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)  # converted, then wrapped
        base = data.make_loader(
            tensors, batch_size=8, train=True, image_size=32, seed=0, device=device, on_device=device.type == "cuda"
        )
        sampler = DistributedSampler(base.dataset, num_replicas=world, rank=rank, shuffle=True, seed=0, drop_last=True)
        loader = DataLoader(base.dataset, batch_size=8, sampler=sampler, drop_last=True, collate_fn=base.collate_fn)
        opt = torch.optim.AdamW(net.parameters(), lr=3e-2)
        train.fit(
            net,
            loader,
            None,
            opt,
            epochs=2,
            device=device,
            checkpoint=tmp_path / f"ckpt-rank{rank}.pt",  # one path per rank: only rank 0's may appear
            progress=False,
            max_steps_per_epoch=3,
        )
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp_path / f"final-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _check_ddp_checkpoint(tmp_path: Path, fake_root: Path, world: int) -> None:
    """Rank 0 alone wrote the checkpoint, with unwrapped keys, and one process resumes from it."""
    assert (tmp_path / "ckpt-rank0.pt").is_file()
    assert not any((tmp_path / f"ckpt-rank{r}.pt").exists() for r in range(1, world))
    state = torch.load(tmp_path / "ckpt-rank0.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and list(state["model"]) == list(TinyNet().state_dict())  # no "module." prefix
    finals = [torch.load(tmp_path / f"final-rank{r}.pt", weights_only=True) for r in range(world)]
    params = {name for name, _ in TinyNet().named_parameters()}
    for k, v in state["model"].items():
        assert torch.equal(v, finals[0][k]), k  # the checkpoint is rank 0's model
        # DDP keeps the parameters in step (BatchNorm statistics are broadcast from rank 0 before each
        # forward pass, so the other ranks' last local update differs)
        assert k not in params or all(torch.equal(v, f[k]) for f in finals), k
    # one process, no process group, resumes the run from the checkpoint and trains the third epoch
    model = TinyNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    tensors = data.decode_samples(fake_root, data.scan_folder(fake_root).samples, cache=tmp_path / "c", progress=False)
    loader = data.make_loader(tensors, batch_size=8, train=True, image_size=32)
    resumed = []
    model.register_forward_pre_hook(lambda m, _a: resumed.append(torch.equal(m.fc.weight, state["model"]["fc.weight"])))
    h = train.fit(
        model,
        loader,
        None,
        opt,
        epochs=3,
        device="cpu",
        checkpoint=tmp_path / "ckpt-rank0.pt",
        resume=True,
        progress=False,
        max_steps_per_epoch=2,
    )
    assert resumed[0] and h.epochs == 3 and h.train_loss[:2] == state["history"]["train_loss"]


@pytest.mark.slow
def test_two_gloo_ranks_checkpoint_once_without_module_prefix_and_one_process_resumes(fake_root, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path), str(fake_root), "gloo"), nprocs=2, join=True)
    _check_ddp_checkpoint(tmp_path, fake_root, world=2)


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ddp_on_one_gpu_with_nccl(fake_root, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(1, str(tmp_path), str(fake_root), "nccl"), nprocs=1, join=True)
    _check_ddp_checkpoint(tmp_path, fake_root, world=1)


def test_fit_refuses_a_ddp_model_converted_after_wrapping(tmp_path):
    """fit checks a wrapped model instead of converting it; one gloo rank in this process."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        net = DistributedDataParallel(TinyNet())  # contiguous weights, wrapped as they are
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loader = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))]
        with pytest.raises(ValueError, match="not channels_last.*before DistributedDataParallel"):
            train.fit(net, loader, None, opt, epochs=1, device="cpu", channels_last=True, progress=False)
        h = train.fit(net, loader, None, opt, epochs=1, device="cpu", channels_last=False, progress=False)
        assert h.epochs == 1
    finally:
        dist.destroy_process_group()
