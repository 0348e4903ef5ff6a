import math
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from tl_helpers import data, train


def _tiny(fake_root, tmp_path):
    tensors = data.decode_samples(fake_root, data.scan_folder(fake_root).samples, cache=tmp_path / "c", progress=False)
    return tensors


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.1),
        )
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.features(x))


def _run(tensors, epochs, checkpoint=None, resume=False, seed=0):
    torch.manual_seed(42)
    model = TinyNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4 * 7)  # the schedule of the whole 4-epoch run
    tl = data.make_loader(tensors, batch_size=16, train=True, seed=seed, image_size=32)
    vl = data.make_loader(tensors, batch_size=64, image_size=32)
    h = train.fit(
        model,
        tl,
        vl,
        opt,
        epochs=epochs,
        device="cpu",
        scheduler=sched,
        seed=seed,
        checkpoint=checkpoint,
        resume=resume,
        progress=False,
    )
    return model, h


def test_fit_learns_and_reports(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    model, h = _run(tensors, epochs=6)
    assert h.epochs == 6 and len(h.val_acc) == 6 and all(t > 0 for t in h.epoch_time)
    assert h.val_acc[-1] > 0.5  # colours are learnable; chance is 0.1
    assert h.train_loss[-1] < h.train_loss[0]
    assert h.images_per_sec[-1] > 0 and h.lr[-1] < h.lr[0]


def test_same_seed_same_numbers(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    m1, h1 = _run(tensors, epochs=2)
    m2, h2 = _run(tensors, epochs=2)
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_resume_reproduces_uninterrupted_run(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    full, h_full = _run(tensors, epochs=4)
    ckpt = tmp_path / "run.pt"
    _run(tensors, epochs=2, checkpoint=ckpt)  # "interrupted" after two epochs
    resumed, h_res = _run(tensors, epochs=4, checkpoint=ckpt, resume=True)
    assert h_res.epochs == 4 and h_res.train_loss == h_full.train_loss
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_evaluate_restores_mode_and_predict_shapes(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    model = TinyNet().train()
    vl = data.make_loader(tensors, batch_size=50, image_size=32)
    r = train.evaluate(model, vl, "cpu")
    assert model.training and r.num_samples == len(tensors) and 0 <= r.accuracy <= 1
    preds, labels, probs = train.predict(model, vl, "cpu")
    assert preds.shape == labels.shape == (len(tensors),) and probs.shape == (len(tensors), 10)
    assert torch.allclose(probs.sum(1), torch.ones(len(tensors)), atol=1e-5)
    assert torch.equal(labels, tensors.labels) and model.training
    assert r.accuracy == pytest.approx(float((preds == labels).float().mean()))  # one loop, one answer
    expected_loss = nn.functional.cross_entropy(probs.clamp_min(1e-12).log(), labels).item()
    assert r.loss == pytest.approx(expected_loss, rel=1e-4)


def test_empty_optimizer_is_rejected(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    frozen = TinyNet()
    for p in frozen.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(frozen.parameters(), lr=0.1)
    tl = data.make_loader(tensors, batch_size=16, train=True, image_size=32)
    before = [p.clone() for p in frozen.parameters()]
    with pytest.raises(ValueError, match="no trainable parameters.*Rebuild it"):
        train.fit(frozen, tl, None, opt, epochs=1, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.parameters()))  # nothing ran


def test_divergence_is_reported(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=float("inf"))  # weights blow up after one step
    tl = data.make_loader(tensors, batch_size=16, train=True, image_size=32)
    with pytest.raises(FloatingPointError, match=r"at epoch 1, step \d+: the learning rate"):
        train.fit(model, tl, None, opt, epochs=3, device="cpu", progress=False)


def test_checkpoint_load_uses_weights_only_and_reports_corruption(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = train.save_checkpoint(tmp_path / "c.pt", model, opt, epoch=1, history=train.History(train_loss=[1.0]))
    epoch, hist = train.load_checkpoint(path, TinyNet(), torch.optim.SGD(TinyNet().parameters(), lr=0.1))
    assert epoch == 1 and hist.train_loss == [1.0]
    path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="delete it"):
        train.load_checkpoint(path, TinyNet())


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_identical_weights(fake_root, tmp_path, sig):
    """A real process is killed mid-training; resuming gives the uninterrupted run's weights."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import signal, sys, time, torch
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (nohup, &)
        sys.path.insert(0, {str(tmp_path.parent)!r})
        from tl_helpers import data, train
        from tests.test_train import TinyNet
        root = {str(fake_root)!r}
        t = data.decode_samples(root, data.scan_folder(root).samples, cache={str(tmp_path / "c")!r}, progress=False)
        slow = len(sys.argv) > 2
        class Slow(torch.utils.data.Dataset):
            def __init__(self, ds): self.ds = ds
            def __len__(self): return len(self.ds)
            def __getitem__(self, i):
                if slow: time.sleep(0.01)
                return self.ds[i]
        torch.manual_seed(42)
        model = TinyNet()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
        tl = data.make_loader(t, batch_size=16, train=True, image_size=32)
        tl = torch.utils.data.DataLoader(Slow(tl.dataset), batch_size=16, shuffle=True, drop_last=True,
                                         generator=tl.generator, collate_fn=tl.collate_fn)
        train.fit(model, tl, None, opt, epochs=6, device='cpu', checkpoint=sys.argv[1], resume=True, progress=False)
        torch.save(model.state_dict(), sys.argv[1] + '.final')
    """)
    )
    import pathlib

    import tl_helpers

    repo = str(pathlib.Path(tl_helpers.__file__).parents[1])
    env = {"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"}
    ref = tmp_path / "ref.pt"
    subprocess.run([sys.executable, str(script), str(ref)], check=True, env=env, cwd=repo)
    ckpt = tmp_path / "ckpt.pt"
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), "slow"], env=env, cwd=repo)
    import time

    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # now mid-way through a later epoch
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0, "the run finished before it could be interrupted"
    assert ckpt.exists() and not list(tmp_path.glob(".ckpt.pt.*"))  # atomic: no temp left visible
    epoch_done = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch_done < 6
    subprocess.run([sys.executable, str(script), str(ckpt)], check=True, env=env, cwd=repo)
    a = torch.load(str(ref) + ".final", weights_only=True)
    b = torch.load(str(ckpt) + ".final", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_identical_metrics_in_fresh_processes(fake_root, tmp_path):
    code = textwrap.dedent(f"""
        import json, torch
        from tl_helpers import data, train
        from tests.test_train import TinyNet
        t = data.decode_samples({str(fake_root)!r}, data.scan_folder({str(fake_root)!r}).samples,
                                cache={str(tmp_path / "c")!r}, progress=False)
        torch.manual_seed(7)
        model = TinyNet()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        h = train.fit(model, data.make_loader(t, batch_size=16, train=True, seed=7, image_size=32),
                      data.make_loader(t, batch_size=64, image_size=32), opt, epochs=2, device="cpu",
                      seed=7, progress=False)
        print(json.dumps([h.train_loss, h.val_loss, h.val_acc]))
    """)
    import pathlib

    import tl_helpers

    repo = str(pathlib.Path(tl_helpers.__file__).parents[1])
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=repo,
            env={"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"},
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_fit_with_torch_compile_matches_eager(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)

    def run(compile_):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        h = train.fit(
            model,
            data.make_loader(tensors, batch_size=30, train=True, image_size=16),
            None,
            opt,
            epochs=1,
            device="cpu",
            progress=False,
            compile=compile_,
            max_steps_per_epoch=2,
        )
        return h.train_loss[0]

    assert run(True) == pytest.approx(run(False), rel=1e-4)


def test_warmup_cosine_schedule_shape():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [param], "lr": 0.1}])
    sched = train.warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)  # linear warm-up to the peak
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))  # then never rises
    assert lrs[-1] < 0.01 and lrs[2] == pytest.approx(0.1)  # cosine from the peak towards 0
    with pytest.raises(ValueError, match="warmup_steps"):
        train.warmup_cosine(opt, total_steps=5, warmup_steps=6)


def test_progressive_resizing_feeds_each_epoch_its_size(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    torch.manual_seed(0)
    model = TinyNet()
    seen = []
    model.features[0].register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = data.make_loader(tensors, batch_size=16, train=True, image_size=32)
    train.fit(model, loader, None, opt, epochs=3, device="cpu", image_sizes=[16, 24, 40], progress=False)
    per_epoch = len(loader)
    assert seen == [(16, 16)] * per_epoch + [(24, 24)] * per_epoch + [(40, 40)] * per_epoch
    for bad in ([16, 24], [16, 0, 32]):
        with pytest.raises(ValueError, match="one positive input size per epoch"):
            train.fit(model, loader, None, opt, epochs=3, device="cpu", image_sizes=bad, progress=False)


def test_resize_batch_is_a_no_op_at_the_same_size_and_antialiased_otherwise():
    x = torch.rand(2, 3, 32, 32)
    assert train.resize_batch(x, 32) is x and train.resize_batch(x, None) is x
    small = train.resize_batch(x, 16)
    assert small.shape == (2, 3, 16, 16)
    # antialiasing averages: a 2x downsized checkerboard is flat grey, not a copy of every other pixel
    board = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    flat = train.resize_batch(board.float().expand(1, 3, 32, 32), 16)
    assert flat.std() < 0.1 and abs(flat.mean() - 0.5) < 0.05


def _fit_tiny(tensors, *, epochs=2, amp="auto", on_device=False, checkpoint=None, resume=False, steps=None, **kw):
    torch.manual_seed(42)
    model = TinyNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    tl = data.make_loader(tensors, batch_size=16, train=True, image_size=32, on_device=on_device)
    vl = data.make_loader(tensors, batch_size=64, image_size=32, on_device=on_device)
    h = train.fit(
        model,
        tl,
        vl,
        opt,
        epochs=epochs,
        device="cpu",
        amp=amp,
        checkpoint=checkpoint,
        resume=resume,
        progress=False,
        max_steps_per_epoch=steps,
        **kw,
    )
    return model, h


def test_uint8_batches_converted_on_the_device_give_identical_numbers(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    x8, y8 = next(iter(data.make_loader(tensors, batch_size=20, image_size=32, on_device=True)))
    xf, yf = next(iter(data.make_loader(tensors, batch_size=20, image_size=32)))
    assert x8.dtype == torch.uint8 and x8.shape == (20, 3, 64, 64) and torch.equal(y8, yf)
    loader = data.make_loader(tensors, batch_size=20, image_size=32, on_device=True)
    assert torch.equal(data.device_transform(loader)(x8), xf)
    assert data.device_transform(data.make_loader(tensors)) is None
    # the same run through fit, float batches from the CPU collate vs uint8 converted after the copy
    m1, h1 = _fit_tiny(tensors, on_device=False)
    m2, h2 = _fit_tiny(tensors, on_device=True)
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc and h1.val_loss == h2.val_loss
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_fit_reads_the_device_once_per_log_interval_not_per_step(fake_root, tmp_path, monkeypatch):
    """Losses and accuracy add up on the device; the host waits for them every log_every steps only."""
    tensors = _tiny(fake_root, tmp_path)
    reads = []
    for name in ("item", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, _name=name, **k):
            if self.dim() == 0:  # a number read back (the sampler's index lists are not counted)
                reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)

    def count(steps, log_every=25):
        reads.clear()
        torch.manual_seed(0)
        model = TinyNet()
        # no augmentation: its random draws are host reads of CPU tensors, once per image
        loader = data.make_loader(tensors, batch_size=16, train=True, augment=False, image_size=32)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        h = train.fit(
            model, loader, None, opt, epochs=1, device="cpu", progress=False, max_steps_per_epoch=steps,
            log_every=log_every,
        )  # fmt: skip
        assert h.train_loss[0] > 0
        return len(reads)

    at_the_end = count(2)
    assert count(7) == at_the_end  # one read at the end of the epoch, however many steps
    assert count(7, log_every=2) - at_the_end == 3 * 3  # and one (3 numbers) at steps 2, 4 and 6


def test_fit_under_bf16_autocast_on_cpu(fake_root, tmp_path):
    """amp=True on the CPU: the forward pass runs in bfloat16, the weights and the loss stay float32."""
    tensors = _tiny(fake_root, tmp_path)
    seen = []
    torch.manual_seed(0)
    model = TinyNet()
    model.fc.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = data.make_loader(tensors, batch_size=16, train=True, image_size=32)
    h = train.fit(model, loader, loader, opt, epochs=2, device="cpu", amp=True, progress=False, max_steps_per_epoch=3)
    assert set(seen) == {torch.bfloat16}  # training and evaluation under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(v) for v in h.train_loss + h.val_loss) and h.epochs == 2
    fp32_model, fp32 = _fit_tiny(tensors, amp=False, steps=3)
    bf16_model, bf16 = _fit_tiny(tensors, amp=True, steps=3)
    assert bf16.train_loss != fp32.train_loss  # autocast did change the arithmetic...
    assert bf16.train_loss[0] == pytest.approx(fp32.train_loss[0], rel=0.05)  # ...by bfloat16's rounding only


def test_resume_under_bf16_autocast_is_exact(fake_root, tmp_path):
    tensors = _tiny(fake_root, tmp_path)
    full, h_full = _fit_tiny(tensors, epochs=3, amp=True)
    ckpt = tmp_path / "amp.pt"
    _fit_tiny(tensors, epochs=1, amp=True, checkpoint=ckpt)
    resumed, h_res = _fit_tiny(tensors, epochs=3, amp=True, checkpoint=ckpt, resume=True)
    assert h_res.epochs == 3 and h_res.train_loss == h_full.train_loss and h_res.val_acc == h_full.val_acc
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_cudnn_benchmark_stays_off_when_determinism_was_asked_for(monkeypatch):
    from tl_helpers.device import seed_everything

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        assert train.cudnn_benchmark_setting(None) is True and train.cudnn_benchmark_setting(False) is False
        seed_everything(0, deterministic=True)
        assert train.cudnn_benchmark_setting(None) is False
        with pytest.warns(UserWarning, match="cudnn_benchmark=True ignored"):
            assert train.cudnn_benchmark_setting(True) is False
        # and through fit's preparation of the model, as on a GPU
        model = TinyNet()
        monkeypatch.setattr(model, "to", lambda *a, **k: model)  # no real GPU here: only the setting is checked
        train._prepare_model(model, torch.device("cuda"), False, compile=False, cudnn_benchmark=None)
        assert torch.backends.cudnn.benchmark is False
        torch.use_deterministic_algorithms(False)
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
        train._prepare_model(model, torch.device("cuda"), False, compile=False, cudnn_benchmark=None)
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.use_deterministic_algorithms(before)


def test_checkpoints_hold_unwrapped_keys_and_old_prefixed_ones_still_load(tmp_path):
    model = TinyNet()
    wrapped = nn.DataParallel(model)  # the same .module wrapping as DistributedDataParallel
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = train.save_checkpoint(tmp_path / "c.pt", wrapped, opt, epoch=1, history=train.History())
    keys = list(torch.load(path, weights_only=True)["model"])
    assert keys == list(model.state_dict()) and not any(k.startswith("module.") for k in keys)
    old = torch.load(path, weights_only=True)
    old["model"] = {f"module.{k}": v for k, v in old["model"].items()}  # as written before the fix
    torch.save(old, tmp_path / "old.pt")
    fresh = TinyNet()
    train.load_checkpoint(tmp_path / "old.pt", fresh)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert train.unwrap_model(wrapped) is model and train.unwrap_model(model) is model


def _fit_on(device, tensors, *, epochs, checkpoint=None, resume=False):
    torch.manual_seed(42)
    model = TinyNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    tl = data.make_loader(tensors, batch_size=16, train=True, image_size=32, device=device, on_device=True)
    vl = data.make_loader(tensors, batch_size=64, image_size=32, device=device, on_device=True)
    h = train.fit(
        model, tl, vl, opt, epochs=epochs, device=device, checkpoint=checkpoint, resume=resume, progress=False
    )
    return model, h


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_with_amp_and_exact_resume(fake_root, tmp_path):
    """fit's default on a GPU (bf16, or fp16 + GradScaler below capability 8) learns and resumes.

    Deterministic algorithms (cuDNN's benchmarking off, see cudnn_benchmark_setting) make the resumed run
    repeat the uninterrupted one; the tolerance allows for the last digits a GPU kernel may still vary in.
    """
    from tl_helpers.device import seed_everything

    cuda = torch.device("cuda")
    tensors = _tiny(fake_root, tmp_path)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    seed_everything(0, deterministic=True)
    try:
        full, h_full = _fit_on(cuda, tensors, epochs=4)
        assert not torch.backends.cudnn.benchmark  # determinism asked for: fit left benchmarking off
        assert h_full.val_acc[-1] > 0.5 and all(math.isfinite(v) for v in h_full.train_loss)
        ckpt = tmp_path / "cuda.pt"
        _fit_on(cuda, tensors, epochs=2, checkpoint=ckpt)
        resumed, h_res = _fit_on(cuda, tensors, epochs=4, checkpoint=ckpt, resume=True)
        assert h_res.epochs == 4 and h_res.train_loss == pytest.approx(h_full.train_loss, rel=1e-4)
        for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), k
        cpu_copy = TinyNet()
        assert train.load_checkpoint(ckpt, cpu_copy)[0] == 2  # a GPU checkpoint loads on the CPU too
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic = before[1]


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uint8_pinned_batches_converted_on_the_gpu_channels_last(fake_root, tmp_path):
    cuda = torch.device("cuda")
    tensors = _tiny(fake_root, tmp_path)
    loader = data.make_loader(tensors, batch_size=16, train=True, image_size=32, device=cuda, on_device=True)
    x, _ = next(iter(loader))
    assert x.dtype == torch.uint8 and x.is_pinned()  # 4x fewer bytes to copy, without blocking
    on_gpu = data.device_transform(loader)(x.to(cuda))
    on_cpu = data.BatchTransform((0.5,) * 3, (0.5,) * 3, 32).transform(x)
    assert on_gpu.device.type == "cuda" and torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-5)
    seen = []
    torch.manual_seed(0)
    model = TinyNet()
    model.features[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train.fit(model, loader, None, opt, epochs=1, device=cuda, progress=False, max_steps_per_epoch=2)
    assert all(t.device.type == "cuda" and t.dtype.is_floating_point for t in seen)
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in seen)
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- provenance


def _tiny_split(seed: int, n: int = 16) -> data.ImageTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return data.ImageTensors(images, labels, [f"s{seed}/{i}.jpg" for i in range(n)], ("a", "b"))


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def test_fit_notes_the_images_and_steps_on_the_model():
    model, train_set, val_set = _tiny_net(), _tiny_split(0), _tiny_split(1)
    assert train.training_record(model) == {"trained_on": set(), "steps": 0, "fit_calls": 0}
    loader = data.make_loader(train_set, batch_size=4, image_size=8, train=True)
    val_loader = data.make_loader(val_set, batch_size=8, image_size=8)
    for _ in range(2):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train.fit(model, loader, val_loader, opt, epochs=3, device="cpu", progress=False)
    record = train.training_record(model)
    assert record == {"trained_on": set(train_set.files), "steps": 24, "fit_calls": 2}
    record["trained_on"].add("x")  # a copy: the model's note is unchanged
    assert "x" not in train.training_record(model)["trained_on"]
    # validation after every epoch: six weight states, all different, noted on the validation split only
    seen = train.evaluation_record(val_set)
    assert len(seen) == 6 and len(set(seen)) == 6
    assert train.evaluation_record(train_set) == []
    assert seen[-1] == train.state_fingerprint(model)


def test_evaluate_and_predict_note_the_weights_on_the_data():
    import copy

    model, test_set = _tiny_net(), _tiny_split(2)
    loader = data.make_loader(test_set, batch_size=8, image_size=8)
    train.evaluate(model, loader, "cpu")
    train.predict(copy.deepcopy(model), loader, "cpu")  # a copy has the same fingerprint
    assert train.evaluation_record(test_set) == [train.state_fingerprint(model)] * 2
    with torch.no_grad():
        model[1].bias.add_(1e-3)
    assert train.state_fingerprint(model) != train.evaluation_record(test_set)[0]
    assert train.evaluation_record(object()) == []
