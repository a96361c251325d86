"""torch's CPU thread count (ddpm_hf.tools.cpu_threads): the cores from the affinity and fake cgroup v2 / v1 files,
the real count of pinned processes, and the oversubscription warning, with a given load and beside a busy process.

The machine is shared with other tests: the real-load tests pin their processes to the last CPU (others pin to
CPU 0 more often) and assert only what a busy-looping process on that CPU makes certain."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm_hf.jobs.arguments import parse_train_args
from ddpm_hf.jobs.trainer import DDPMTrainer
from ddpm_hf.tools import cpu_threads
from ddpm_hf.tools.cpu_threads import available_cores, threads_per_process, warn_if_oversubscribed

CORE = max(os.sched_getaffinity(0))
ENV = {name: value for name, value in os.environ.items() if name != "LOCAL_WORLD_SIZE"}
needs_taskset = pytest.mark.skipif(shutil.which("taskset") is None, reason="no taskset")


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})


def fake_root(tmp_path: Path, cgroups: str | None, files: dict[str, str]) -> Path:
    """A root with /proc/self/cgroup holding `cgroups` (none when None) and `files` under /sys/fs/cgroup."""
    if cgroups is not None:
        (tmp_path / "proc/self").mkdir(parents=True)
        (tmp_path / "proc/self/cgroup").write_text(cgroups)
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


def v1(folder: str, quota: str) -> dict[str, str]:
    """cgroup v1 quota files in `folder` (under /sys/fs/cgroup) with a period of 100 ms."""
    return {f"{folder}/cpu.cfs_quota_us": quota, f"{folder}/cpu.cfs_period_us": "100000"}


@pytest.mark.parametrize(
    "cgroups, files, cores",
    [
        ("0::/job\n", {"job/cpu.max": "150000 100000"}, 1),  # 1.5 cores round down
        ("0::/job\n", {"job/cpu.max": "250000 100000"}, 2),
        ("0::/job\n", {"job/cpu.max": "50000 100000"}, 1),  # under a core: still one thread
        ("0::/job\n", {"job/cpu.max": "max 100000"}, 4),  # no quota: the affinity
        ("0::/job\n", {"job/cpu.max": "800000 100000"}, 4),  # the affinity is below the quota
        ("0::/a/b\n", {"a/b/cpu.max": "max 100000", "a/cpu.max": "200000 100000"}, 2),  # a parent's quota
        ("0::/a/b\n", {"a/b/cpu.max": "300000 100000", "a/cpu.max": "max 100000"}, 3),
        ("0::/docker/abc\n", {"cpu.max": "100000 100000"}, 1),  # a host path; the container's cgroup is the mount
        ("4:cpu,cpuacct:/job\n", v1("cpu,cpuacct/job", "300000"), 3),
        ("4:cpu,cpuacct:/job\n", v1("cpu,cpuacct/job", "-1"), 4),
        ("4:cpu,cpuacct:/docker/abc\n", v1("cpu,cpuacct", "200000"), 2),  # v1 in a container
        ("2:memory:/job\n1:cpu:/job\n0::/\n", v1("cpu/job", "150000"), 1),  # a hybrid set-up, like this machine's
        ("3:memory:/job\n", {"memory/job/cpu.max": "100000 100000"}, 4),  # not the cpu controller's
        ("0::/job\n", {}, 4),  # cgroup files absent
        (None, {}, 4),  # no /proc/self/cgroup
    ],
)
def test_the_cores_are_the_affinity_capped_by_the_cgroup_quota(tmp_path, four_cpus, cgroups, files, cores):
    assert available_cores(fake_root(tmp_path, cgroups, files)) == cores


@pytest.mark.parametrize("processes, threads", [(1, 6), (2, 3), (4, 1), (8, 1)])
def test_the_cores_are_shared_among_the_local_processes(tmp_path, monkeypatch, processes, threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    assert threads_per_process(processes, fake_root(tmp_path, None, {})) == threads


def test_a_quota_is_shared_too(tmp_path, four_cpus):
    assert threads_per_process(2, fake_root(tmp_path, "0::/\n", {"cpu.max": "350000 100000"})) == 1


# The module loaded by its path as `m`: it imports no ddpm_hf, and the package would import diffusers (~6 s of CPU).
LOAD = (
    "import importlib.util, torch\n"
    f"spec = importlib.util.spec_from_file_location('cpu_threads', {cpu_threads.__file__!r})\n"
    "m = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(m)\n"
)


def run_pinned(cpus: str, code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` after LOAD in a fresh interpreter under `taskset -c cpus`, without LOCAL_WORLD_SIZE unless in `env`."""
    command = ["taskset", "-c", cpus, sys.executable, "-c", LOAD + code]
    return run(command, env)


def run_beside_spinner(code: str) -> subprocess.CompletedProcess:
    """`code` after LOAD in a fresh interpreter that pins itself to CORE once loaded (not loading on a taken core)."""
    return run([sys.executable, "-c", f"{LOAD}import os\nos.sched_setaffinity(0, {{{CORE}}})\n{code}"], {})


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env={**ENV, **env}, capture_output=True, text=True, check=True, timeout=120)


@needs_taskset
def test_a_process_pinned_to_one_core_runs_one_thread():
    result = run_pinned(str(CORE), "print(m.set_cpu_threads(None, check=False), torch.get_num_threads())")
    assert result.stdout.split() == ["1", "1"]


@needs_taskset
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_two_local_processes_halve_the_threads():
    cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))[:2]))
    report = "print(m.set_cpu_threads(None, check=False), torch.get_num_threads())\n"
    code = f"{report}import os\nos.environ['LOCAL_WORLD_SIZE'] = '2'\n{report}"  # read when the threads are set
    assert run_pinned(cpus, code, LOCAL_WORLD_SIZE="1").stdout.split() == ["2", "2", "1", "1"]


def no_measurement() -> float:
    raise AssertionError("the load is measured only when the threads fit the cores")


def test_more_threads_than_cores_are_warned_about_without_measuring(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    root = fake_root(tmp_path, None, {})
    threads, processes = (
        warn_if_oversubscribed(3, 1, root, no_measurement),
        warn_if_oversubscribed(1, 4, root, no_measurement),
    )
    assert threads.startswith("3 torch threads x 1 process need 3 cores; available: 2")
    assert "pass --cpu_threads 2;" in threads and "fewer processes" not in threads
    assert processes.startswith("1 torch thread x 4 processes need 4 cores; available: 2")
    assert "run fewer processes;" in processes and "--cpu_threads" not in processes
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, threads),
        (logging.WARNING, processes),
    ]
    assert warn_if_oversubscribed(2, 1, root, lambda: 0.0) is None and len(caplog.records) == 2


@pytest.mark.parametrize(
    "cpus, quota, threads, load, advice",
    [
        (2, None, 2, 0.0, None),
        (2, None, 2, 0.4, None),  # background noise: free 1.6, within the tolerance of 2
        (2, None, 2, 0.6, "stop the other load, or pass --cpu_threads 1;"),  # free 1.4
        (2, None, 2, 1.0, "stop the other load, or pass --cpu_threads 1;"),  # the case
        (2, None, 1, 1.0, None),  # one thread beside one busy core
        (2, None, 1, 1.6, "stop the other load;"),  # free 0.4: no thread count fits
        (4, "200000 100000", 2, 1.0, None),  # the quota, not the load, limits: free min(2, 3)
        (4, "200000 100000", 2, 2.6, "stop the other load, or pass --cpu_threads 1;"),  # free 1.4
    ],
)
def test_other_load_is_warned_about_beyond_the_tolerance(
    tmp_path, monkeypatch, caplog, cpus, quota, threads, load, advice
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    root = fake_root(tmp_path, "0::/\n", {} if quota is None else {"cpu.max": quota})
    message = warn_if_oversubscribed(threads, 1, root, lambda: load)
    if advice is None:
        assert message is None and not caplog.records
    else:
        assert message.startswith(f"Other processes keep {load:.1f} cores of this process's CPUs busy")
        assert f"{threads} torch thread" in message and advice in message
        assert [r.getMessage() for r in caplog.records] == [message]


@pytest.fixture
def spinner():
    """A busy-looping Python process pinned to CORE, a child of this test's process; gone after the test."""
    code = f"import os; os.sched_setaffinity(0, {{{CORE}}}); print('ready', flush=True)\nwhile True: pass"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    yield process
    process.kill()
    process.wait()


def test_a_busy_process_on_the_same_core_is_warned_about(spinner):
    result = run_beside_spinner("print(m.set_cpu_threads(None))")
    assert result.stdout.split() == ["1"]
    assert "Other processes keep" in result.stderr and "for 1 torch thread x 1 process:" in result.stderr


def test_the_jobs_own_processes_are_not_other_load(spinner):
    """The spinner is a sibling of the measuring process: foreign to it alone, but part of its job under torchrun
    (LOCAL_WORLD_SIZE set), whose launcher is the parent of all the job's processes, as this test's process is.

    The spinner keeps CORE busy: alone, the measurer sees a full core of other load; in the job, the core less the
    spinner's share, which the measurer reads from the spinner's own CPU time over the same sample."""
    code = f"""import psutil, time
spinner = psutil.Process({spinner.pid})
print(m.other_load(0.5))
os.environ["LOCAL_WORLD_SIZE"] = "1"
before, start = sum(spinner.cpu_times()[:2]), time.perf_counter()
print(m.other_load(0.5), (sum(spinner.cpu_times()[:2]) - before) / (time.perf_counter() - start))
"""
    foreign, own, share = map(float, run_beside_spinner(code).stdout.split())
    if share < 0.25:
        pytest.skip(f"the spinner got {share:.2f} of its core: the machine is too busy to tell its share apart")
    assert foreign > 0.8 and abs(own - (1 - share)) < 0.15, (foreign, own, share)


@pytest.fixture
def torch_threads():
    """Restores torch's thread count, which the trainer sets for the whole process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_trainer_sets_and_checks_its_threads(tmp_path, monkeypatch, caplog, torch_threads, fresh_accelerate_state):
    """On one core: --cpu_threads 2 is set and warned about; by default one thread (whatever the load, not asserted)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    flags = "--unet tiny --num_train_timesteps 50 --train_batch_size 8 --max_train_steps 1 --report_to none".split()
    DDPMTrainer(parse_train_args([*flags, "--output_dir", str(tmp_path / "two"), "--cpu_threads", "2"]))
    assert torch.get_num_threads() == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "ddpm_hf.tools.cpu_threads"]
    assert len(warnings) == 1 and warnings[0].startswith("2 torch threads x 1 process need 2 cores; available: 1")
    DDPMTrainer(parse_train_args([*flags, "--output_dir", str(tmp_path / "default")]))
    assert torch.get_num_threads() == 1
