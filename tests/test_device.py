import pytest
import torch

from tl_helpers import device


@pytest.mark.parametrize(
    "cuda,mps,expected", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.delenv("TL_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device, "_mps_available", lambda: mps)
    assert device.get_device() == torch.device(expected)
    monkeypatch.setenv("TL_DEVICE", "cpu")
    assert device.get_device() == torch.device("cpu")  # the override wins


def test_get_device_env_override(monkeypatch):
    monkeypatch.setenv("TL_DEVICE", "cpu")
    assert device.get_device() == torch.device("cpu")
    assert device.get_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_requesting_missing_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TL_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        device.get_device()


def test_precision_cpu_is_fp32_without_scaler():
    p = device.choose_precision(torch.device("cpu"))
    assert p.dtype is None and not p.use_scaler and not p.enabled
    assert not p.grad_scaler().is_enabled()


def test_precision_cuda_logic_without_a_gpu(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(device, "bf16_supported", lambda d: True)
    p = device.choose_precision(cuda)
    assert p.dtype == torch.bfloat16 and not p.use_scaler
    monkeypatch.setattr(device, "bf16_supported", lambda d: False)
    p = device.choose_precision(cuda)
    assert p.dtype == torch.float16 and p.use_scaler
    assert device.choose_precision(cuda, amp=False).dtype is None
    assert device.choose_precision(torch.device("cpu"), amp=True).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp must be"):
        device.choose_precision(cuda, amp="fast")


@pytest.mark.parametrize(
    "capability,dtype,scaler",
    [
        ((7, 0), torch.float16, True),  # V100: bf16 only emulated
        ((7, 5), torch.float16, True),  # T4: torch.cuda.is_bf16_supported() says True, but emulated
        ((8, 0), torch.bfloat16, False),  # A100
        ((8, 9), torch.bfloat16, False),  # L4
        ((9, 0), torch.bfloat16, False),  # H100
    ],
)
def test_precision_follows_the_compute_capability(monkeypatch, capability, dtype, scaler):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what pre-Ampere GPUs answer
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    cuda = torch.device("cuda")
    assert device.bf16_supported(cuda) is (dtype == torch.bfloat16)
    for amp in ("auto", True):
        p = device.choose_precision(cuda, amp)
        assert (p.device_type, p.dtype, p.use_scaler) == ("cuda", dtype, scaler)
    # the CPU and MPS answers do not depend on a GPU being present
    assert not device.bf16_supported(torch.device("cpu")) and not device.bf16_supported(torch.device("mps"))
    assert device.choose_precision(torch.device("cpu")).dtype is None
    assert device.choose_precision(torch.device("cpu"), amp=True).dtype == torch.bfloat16
    mps = device.choose_precision(torch.device("mps"))
    assert mps.dtype is None and not mps.use_scaler
    assert device.choose_precision(torch.device("mps"), amp=True).dtype is None


def test_bf16_supported_without_cuda_never_asks_for_a_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: pytest.fail("asked without CUDA"))
    assert device.bf16_supported(torch.device("cuda")) is False


def test_synchronize_is_a_no_op_on_cpu_and_waits_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(d))
    device.synchronize("cpu")
    assert calls == []
    device.synchronize(torch.device("cuda", 0))
    assert calls == [torch.device("cuda", 0)]


def test_cpu_autocast_bf16_runs():
    p = device.choose_precision(torch.device("cpu"), amp=torch.bfloat16)
    lin = torch.nn.Linear(4, 2)
    with p.autocast():
        out = lin(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16


def test_seed_everything_reproduces_and_is_safe_without_cuda():
    device.seed_everything(123)
    a = torch.randn(5)
    device.seed_everything(123)
    assert torch.equal(a, torch.randn(5))


def test_to_device_channels_last_and_pinning_rules():
    x = torch.randn(2, 3, 8, 8)
    y = device.to_device(x, torch.device("cpu"), channels_last=True)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert device.pin_memory_for(torch.device("cpu")) is False
    assert device.pin_memory_for(torch.device("cuda")) is True


def test_num_threads_context_restores():
    before = torch.get_num_threads()
    with device.num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_precision_matches_the_real_gpu():
    dev = torch.device("cuda")
    major, _ = torch.cuda.get_device_capability(dev)
    p = device.choose_precision(dev)
    if major >= 8:
        assert p.dtype == torch.bfloat16 and not p.use_scaler
    else:
        assert p.dtype == torch.float16 and p.use_scaler and p.grad_scaler().is_enabled()


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_step():
    dev = torch.device("cuda")
    p = device.choose_precision(dev)
    lin = torch.nn.Linear(8, 2).to(dev)
    with p.autocast():
        out = lin(torch.randn(4, 8, device=dev))
    assert out.dtype == p.dtype
