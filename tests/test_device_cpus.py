"""CPU threads on shared machines: usable CPUs (affinity, cgroup quota), torch's thread pools, the kernel env."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from tests.helpers import load_root_conftest
from tl_helpers import device, runner

REPO = Path(__file__).resolve().parents[1]


def cgroup_v2(tmp_path: Path, cpu_max: str) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(tmp_path: Path, quota: str, period: str = "100000") -> Path:
    root = tmp_path / "cgroup"
    (root / "cpu,cpuacct").mkdir(parents=True)
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text(period + "\n")
    return root


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the machine's count is not what the process may use


def test_cgroup_v2_quota_caps_the_affinity(tmp_path, eight_cpus):
    root = cgroup_v2(tmp_path, "150000 100000")
    assert device.cpu_quota(root, proc_cgroup=tmp_path / "none") == pytest.approx(1.5)
    assert device.available_cpus(root) == 2  # 1.5 CPUs round up
    (root / "cpu.max").write_text("50000 100000\n")
    assert device.available_cpus(root) == 1
    (root / "cpu.max").write_text("400000 100000\n")
    assert device.available_cpus(root) == 4


def test_cgroup_v2_max_means_no_quota(tmp_path, eight_cpus):
    root = cgroup_v2(tmp_path, "max 100000")
    assert device.cpu_quota(root, proc_cgroup=tmp_path / "none") is None
    assert device.available_cpus(root) == 8  # the affinity, not os.cpu_count()


def test_cgroup_v1_quota_and_no_quota(tmp_path, eight_cpus):
    root = cgroup_v1(tmp_path, "200000")
    assert device.cpu_quota(root, proc_cgroup=tmp_path / "none") == pytest.approx(2.0)
    assert device.available_cpus(root) == 2
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert device.cpu_quota(root, proc_cgroup=tmp_path / "none") is None
    assert device.available_cpus(root) == 8


def test_the_quota_of_the_processs_own_cgroup_counts(tmp_path, eight_cpus):
    root = cgroup_v2(tmp_path, "max 100000")
    (root / "user.slice" / "job").mkdir(parents=True)
    (root / "user.slice" / "cpu.max").write_text("300000 100000\n")
    (root / "user.slice" / "job" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "cgroup.txt"
    proc.write_text("0::/user.slice/job\n")
    assert device.cpu_quota(root, proc_cgroup=proc) == pytest.approx(3.0)  # the parent's quota holds


def test_without_affinity_or_cgroups_it_falls_back_to_the_cpu_count(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert device.available_cpus(tmp_path / "no-cgroups") == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert device.available_cpus(tmp_path / "no-cgroups") == 1


def test_available_cpus_here_never_exceeds_the_affinity():
    n = device.available_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_configure_cpu_threads_sets_torch_and_respects_omp_num_threads(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert device.configure_cpu_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(device, "available_cpus", lambda cgroup_root=None: 3)
    assert device.configure_cpu_threads() == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # e.g. the grader sharing CPUs between kernels
    assert device.configure_cpu_threads() == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # never more than the CPUs we may use
    assert device.configure_cpu_threads() == 3
    assert torch.get_num_interop_threads() >= 1


def test_seed_everything_and_get_device_configure_threads_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(device, "configure_cpu_threads", lambda n=None, lower_only=False: calls.append(lower_only))
    monkeypatch.setattr(device, "_cpu_threads_configured", False)
    device.seed_everything(0)
    device.get_device("cpu")
    device.seed_everything(1)
    assert calls == [True]


def test_the_automatic_configuration_only_lowers_the_thread_count(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "available_cpus", lambda cgroup_root=None: 2)
    torch.set_num_threads(1)  # chosen before, e.g. `python -m tl_helpers.ddp --threads 1`
    monkeypatch.setattr(device, "_cpu_threads_configured", False)
    device.seed_everything(0)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(4)  # more than the CPUs this process may use (a container's quota of 2)
    monkeypatch.setattr(device, "_cpu_threads_configured", False)
    device.get_device("cpu")
    assert torch.get_num_threads() == 2


def test_kernel_env_adds_a_short_spin_without_overriding_the_caller():
    assert runner.KERNEL_ENV == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}
    assert runner.kernel_env({"PATH": "/bin"}) == {"PATH": "/bin", **runner.KERNEL_ENV}
    assert runner.kernel_env({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    assert runner.kernel_env({"GOMP_SPINCOUNT": "0"})["GOMP_SPINCOUNT"] == "0"


def test_this_test_run_has_the_kernel_env():
    """The root conftest sets it before torch loads, so nbval's kernels inherit it."""
    for name in runner.KERNEL_ENV:
        assert os.environ.get(name), name  # setdefault: a value the caller exported wins


@pytest.mark.parametrize(
    ("workerinput", "numprocesses", "spin"),
    [
        (None, None, "1000"),  # no xdist: one job, the course's short spin
        (None, 1, "1000"),
        (None, 2, "0"),  # the controller of `-n 2`, before it starts the workers
        ({"workercount": 2}, None, "0"),  # a worker of `-n 2`
        ({"workercount": 1}, None, "1000"),
    ],
)
def test_conftest_stops_spinning_where_several_workers_share_the_cpus(monkeypatch, workerinput, numprocesses, spin):
    conftest = load_root_conftest()
    config = types.SimpleNamespace(option=types.SimpleNamespace(numprocesses=numprocesses))
    if workerinput is not None:
        config.workerinput = workerinput
    for name in (*runner.KERNEL_ENV, *runner.NO_SPIN_ENV):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    conftest.pytest_configure(config)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["GOMP_SPINCOUNT"] == spin
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")  # a value the caller exported wins
    conftest.pytest_configure(config)
    assert os.environ["GOMP_SPINCOUNT"] == "5"


def test_ci_wait_policy_reaches_notebook_kernels_only_and_is_restored(monkeypatch):
    """TL_TEST_NOTEBOOK_WAIT_POLICY=ACTIVE: nbval's kernels spin; everything else keeps PASSIVE."""
    conftest = load_root_conftest()

    class NotebookCell:  # what nbval's items carry
        test_outputs = None
        config = None  # no pytest-xdist workers: the kernel keeps its own thread count

    class UnitTest:
        pass

    def policy_during_setup(item):
        setup = conftest.pytest_runtest_setup(item)
        next(setup)  # the kernel starts here
        during = os.environ.get("OMP_WAIT_POLICY")
        with pytest.raises(StopIteration):
            setup.send(None)
        return during, os.environ.get("OMP_WAIT_POLICY")

    monkeypatch.delenv("TL_SAVE_EXECUTED", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv(conftest.NOTEBOOK_WAIT_POLICY, "ACTIVE")
    assert policy_during_setup(NotebookCell()) == ("ACTIVE", "PASSIVE")
    assert policy_during_setup(UnitTest()) == ("PASSIVE", "PASSIVE")
    monkeypatch.delenv(conftest.NOTEBOOK_WAIT_POLICY)
    assert policy_during_setup(NotebookCell()) == ("PASSIVE", "PASSIVE")


def test_libgomp_reads_the_kernel_env_and_spins_only_briefly():
    code = "import torch; torch.ones(64, 64).sum()"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    outputs = {}
    no_spin = runner.kernel_env({**base, **runner.NO_SPIN_ENV})
    for label, env in (("kernel", runner.kernel_env(base)), ("no spin", no_spin), ("default", base)):
        r = subprocess.run(
            [sys.executable, "-c", code], env={**env, "OMP_DISPLAY_ENV": "VERBOSE"}, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr[-2000:]
        outputs[label] = dict(re.findall(r"^\s*(\w+) = '([^']*)'", r.stderr, flags=re.M))
    assert outputs["kernel"]["GOMP_SPINCOUNT"] == "1000"  # waiting threads spin a few microseconds, then sleep
    assert outputs["no spin"]["GOMP_SPINCOUNT"] == "0"  # waiting threads sleep at once
    assert int(outputs["default"]["GOMP_SPINCOUNT"]) > 100_000  # what torch does without it: spin for milliseconds


def test_makefile_installs_the_kernel_specs_with_the_kernel_env(tmp_path):
    makefile = (REPO / "Makefile").read_text()
    [line] = re.findall(r"^KERNEL_ENV := (.*)$", makefile, flags=re.M)
    pairs = re.findall(r"--env (\S+) (\S+)", line)
    assert dict(pairs) == runner.KERNEL_ENV
    installs = [ln for ln in makefile.splitlines() if "ipykernel install" in ln]
    assert len(installs) == 2 and all("$(KERNEL_ENV)" in ln for ln in installs)
    assert any("--name tl-course" in ln for ln in installs) and any("--name" not in ln for ln in installs)
    flags = [arg for pair in pairs for arg in ("--env", *pair)]
    r = subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(tmp_path), "--name", "tl-test", *flags],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / "tl-test" / "kernel.json").read_text())
    assert spec["env"] == runner.KERNEL_ENV


def test_the_graders_kernels_get_the_kernel_env(tmp_path):
    import nbformat

    cell = "import os\nseen = {k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'TL_PRIVATE_DATA')}"
    path = tmp_path / "env.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), path)
    extra = "import json\nprint('M:' + json.dumps(seen))"
    run = runner.run_isolated(path, extra, "M:", cell_timeout=60, total_timeout=120, env={"TL_PRIVATE_DATA": ""})
    assert run.results == {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"], "TL_PRIVATE_DATA": ""}, run


@pytest.mark.slow
def test_shared_cpu_benchmark_runs_in_smoke_mode(tmp_path):
    """About 15 s: the benchmark's plumbing (children started like kernels, ready/go, JSON); its times mean nothing."""
    out = tmp_path / "shared_cpu.json"
    args = ["--steps", "1", "--batch", "2", "--size", "32", "--variants", "kernel env", "--out", str(out)]
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "shared_cpu.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(out.read_text())
    row = result["variants"]["kernel env"]
    assert row["env"] == runner.KERNEL_ENV and len(row["pair_s"]) == 2 and row["pair_over_alone"] > 0
    assert result["machine"]["available_cpus"] == device.available_cpus()
