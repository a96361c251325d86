"""Faults of long runs on many processes: preemption by SIGTERM, a process that dies, and several machines that do
not share a disk (two `accelerate launch` on loopback, each in its own working directory)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from helpers.ports import free_port
from safetensors.torch import load_file
from test_trainer import QUICK, SCRIPT, unet_weights

from ddpm_hf.jobs.arguments import parse_train_args
from ddpm_hf.jobs.trainer import DDPMTrainer
from ddpm_hf.tools import checkpoints
from ddpm_hf.tools.preemption import Preempted
from ddpm_hf.tools.run_folder import holds_pipeline

# The documented exit statuses: the trainer's after a preemption (EX_TEMPFAIL), and `accelerate launch` killed by
# SIGTERM (128 + 15), which is what it returns when it received the SIGTERM itself.
PREEMPTED = 75
LAUNCHER_TERMINATED = 128 + signal.SIGTERM
# 30 steps with a checkpoint every 10. Dropout draws from each process's global RNG, so a resumed run is exact only
# if each process gets its own RNG state back.
JOB = ["--max_train_steps", "30", "--checkpointing_steps", "10", "--dropout", "0.1", "--random_flip"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
# torchrun's agent SIGKILLs workers this long after it SIGTERMs them (TORCH_ELASTIC_SHUTDOWN_TIMEOUT).
AGENT_GRACE_SECONDS = 30
# A dead process stops the others within this (measured: about 2 s on 2 busy cores), well under the agent's grace.
DEAD_PROCESS_BOUND_SECONDS = 20


def accelerate(*args: str, machines: int = 1, machine_rank: int = 0, port: int | None = None) -> list[str]:
    """`accelerate launch` of the trainer on 2 processes in all (gloo on the CPU), on 1 machine or, on loopback,
    as machine `machine_rank` of 2 whose main process listens on `port`."""
    launcher = Path(sys.executable).parent / "accelerate"
    flags = ["--num_processes", "2", "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    flags += ["--num_machines", str(machines)]
    if machines > 1:
        flags += [
            "--machine_rank",
            str(machine_rank),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(port),
        ]
    return [str(launcher), "launch", *flags, str(SCRIPT), *QUICK, *args]


STARTED: list[subprocess.Popen] = []


def start(command: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start `command` in a process group of its own, with its stderr in the file `log` (a pipe left unread could
    fill and block it)."""
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            command, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """A failed test leaves none of the launches it started (nor their workers) running."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_machines(tmp_path: Path, *args: str) -> list[tuple[int, str]]:
    """The trainer on 2 machines of 1 process each, machine k in `tmp_path/machine<k>` with `--output_dir run`;
    each launcher's exit status and stderr."""
    port = free_port()
    procs = []
    for rank in range(2):
        cwd = tmp_path / f"machine{rank}"
        cwd.mkdir(exist_ok=True)
        command = accelerate("--output_dir", "run", *args, machines=2, machine_rank=rank, port=port)
        procs.append(start(command, tmp_path / f"machine{rank}.log", cwd=cwd))
    return [(p.wait(timeout=600), (tmp_path / f"machine{rank}.log").read_text()) for rank, p in enumerate(procs)]


def wait_for_checkpoint(proc: subprocess.Popen, root: Path, step: int) -> None:
    deadline = time.monotonic() + 300
    while not (root / f"checkpoint-{step}" / checkpoints.STATE_FILE).exists():
        assert proc.poll() is None, f"the run ended before checkpoint {step}"
        assert time.monotonic() < deadline, f"no checkpoint {step} after 300 s"
        time.sleep(0.01)


def worker(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    """The training process of global rank `rank` among the launcher's descendants."""
    (found,) = [p for p in psutil.Process(launcher.pid).children(recursive=True) if _rank(p) == str(rank)]
    return found


def _rank(process: psutil.Process) -> str | None:
    try:
        return process.environ().get("RANK")
    except psutil.Error:  # a helper process that ended meanwhile
        return None


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def checkpoint_steps(root: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in checkpoints.complete_checkpoints(root)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The output folder of JOB run without interruption on one machine with 2 processes."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = subprocess.run(accelerate("--output_dir", str(out), *JOB), env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# ---------------------------------------------------------------------- preemption


def test_sigterm_ends_the_step_then_checkpoints_and_exits_75(tmp_path, fresh_accelerate_state):
    """In one process: SIGTERM in the middle of step 3 does not end the process; step 3 is completed, checkpointed,
    and `Preempted` carries exit status 75; the previous SIGTERM handler is back afterwards."""
    out = tmp_path / "run"
    argv = [*QUICK, "--output_dir", str(out), "--max_train_steps", "8", "--checkpointing_steps", "5"]
    trainer = DDPMTrainer(parse_train_args(argv))
    optimize = trainer._optimize

    def signalled_before_the_third_update():
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        optimize()

    trainer._optimize = signalled_before_the_third_update
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted) as stop:
        trainer.train()
    assert stop.value.code == PREEMPTED and stop.value.step == 3
    assert checkpoint_steps(out / "checkpoints") == [3]
    assert checkpoints.read_state(out / "checkpoints" / "checkpoint-3")["global_step"] == 3
    saved = load_file(out / "checkpoints" / "checkpoint-3" / "model.safetensors")
    assert same_weights(saved, {k: v.detach() for k, v in trainer.unet.state_dict().items()})
    assert not holds_pipeline(out), "stopped before the end"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_and_resumes_to_the_same_bits(tmp_path, uninterrupted):
    out, log = tmp_path / "run", tmp_path / "preempted.log"
    proc = start(accelerate("--output_dir", str(out), *JOB), log)
    wait_for_checkpoint(proc, out / "checkpoints", 10)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # the launcher only, as a scheduler signals the job's first process
    assert proc.wait(timeout=2 * AGENT_GRACE_SECONDS) == LAUNCHER_TERMINATED
    assert time.monotonic() - sent < AGENT_GRACE_SECONDS
    stderr = log.read_text()
    assert "forcefully exiting" not in stderr, "the workers ended before torchrun's SIGKILL"
    (stopped,) = [line for line in stderr.splitlines() if "Stopped on SIGTERM after step" in line]
    step = int(stopped.split("after step ")[1].split()[0])
    assert 10 < step < 30 and checkpoint_steps(out / "checkpoints") == [10, step]
    assert not holds_pipeline(out)

    resumed = subprocess.run(
        accelerate("--output_dir", str(out), *JOB, "--resume_from_checkpoint", "latest"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {out / 'checkpoints' / f'checkpoint-{step}'}" in resumed.stderr
    assert same_weights(unet_weights(out), unet_weights(uninterrupted))
    final = [load_file(d / "checkpoints" / "checkpoint-30" / "model.safetensors") for d in (out, uninterrupted)]
    assert same_weights(*final)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    """Only rank 1 gets the signal; rank 0, never signalled, stops after the same step: both saved that step."""
    out, log = tmp_path / "run", tmp_path / "preempted.log"
    proc = start(accelerate("--output_dir", str(out), *JOB), log)
    wait_for_checkpoint(proc, out / "checkpoints", 10)
    rank1 = worker(proc, 1)
    rank1.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=2 * AGENT_GRACE_SECONDS) != 0, "torchrun reports a worker's non-zero exit as a failure"
    stderr = log.read_text()
    assert f"exitcode  : {PREEMPTED} (pid: {rank1.pid})" in stderr
    (stopped,) = [line for line in stderr.splitlines() if "Stopped on SIGTERM after step" in line]  # rank 0's line
    step = int(stopped.split("after step ")[1].split()[0])
    assert checkpoint_steps(out / "checkpoints") == [10, step]
    last = out / "checkpoints" / f"checkpoint-{step}"
    assert (last / "random_states_0.pkl").is_file() and (last / "random_states_1.pkl").is_file()


# ---------------------------------------------------------------------- a dead process


@pytest.mark.slow
def test_a_killed_process_stops_the_others_and_the_last_checkpoint_stays_whole(tmp_path):
    out, log = tmp_path / "run", tmp_path / "killed.log"
    # A checkpoint every step: the kill likely lands in one, which must then not replace the last complete one.
    proc = start(accelerate("--output_dir", str(out), "--max_train_steps", "1000", "--checkpointing_steps", "1"), log)
    wait_for_checkpoint(proc, out / "checkpoints", 3)
    rank1 = worker(proc, 1)
    killed = time.monotonic()
    rank1.send_signal(signal.SIGKILL)
    returncode = proc.wait(timeout=2 * AGENT_GRACE_SECONDS)
    assert returncode not in (0, PREEMPTED, LAUNCHER_TERMINATED)
    assert time.monotonic() - killed < DEAD_PROCESS_BOUND_SECONDS
    stderr = log.read_text()
    assert f"Signal 9 (SIGKILL) received by PID {rank1.pid}" in stderr, stderr[-3000:]
    assert "forcefully exiting" not in stderr, "the survivor stopped by itself, not by torchrun's SIGKILL"

    last = checkpoints.complete_checkpoints(out / "checkpoints")[-1]
    assert checkpoints.read_state(last)["global_step"] == int(last.name.split("-")[1]) >= 3
    load_file(last / "model.safetensors")
    names = {p.name for p in last.iterdir()}
    assert {"optimizer.bin", "random_states_0.pkl", "random_states_1.pkl", "custom_checkpoint_0.pkl"} <= names
    for name in names - {"model.safetensors", checkpoints.STATE_FILE}:
        torch.load(last / name, weights_only=False)


# ---------------------------------------------------------------------- several machines


def test_missing_files_names_the_folder_or_the_files(tmp_path):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    for name in ("model.safetensors", "optimizer.bin", "trainer_state.json", "random_states_0.pkl"):
        (folder / name).touch()
    shared = checkpoints.shared_files(folder)
    assert shared == ["model.safetensors", "optimizer.bin", "trainer_state.json"]
    assert checkpoints.missing_files(folder, shared, 0) == []
    assert checkpoints.missing_files(folder, [*shared, "custom_checkpoint_0.pkl"], 1) == [
        "custom_checkpoint_0.pkl",
        "random_states_1.pkl",
    ]
    assert checkpoints.missing_files(tmp_path / "elsewhere", shared, 0) == [f"{tmp_path / 'elsewhere'}/"]


@pytest.mark.slow
def test_two_machines_with_save_on_each_node_train_and_resume_as_one(tmp_path, uninterrupted):
    results = run_machines(tmp_path, *JOB, "--save_on_each_node")
    assert [status for status, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    runs = [tmp_path / f"machine{rank}" / "run" for rank in range(2)]
    assert same_weights(unet_weights(runs[0]), unet_weights(uninterrupted)), "2 machines train as 1 machine"
    for rank, run in enumerate(runs):
        assert checkpoint_steps(run / "checkpoints") == [10, 20, 30]
        names = {p.name for p in (run / "checkpoints" / "checkpoint-20").iterdir()}
        assert {"model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"} <= names
        assert f"random_states_{rank}.pkl" in names
    assert not holds_pipeline(runs[1]), "the pipeline is the main process's"

    # As if both machines had stopped after checkpoint 20: each resumes from its own disk.
    for run in runs:
        subprocess.run(["rm", "-r", str(run / "checkpoints" / "checkpoint-30")], check=True)
    subprocess.run(["rm", "-r", str(runs[0] / "unet"), str(runs[0] / "model_index.json")], check=True)
    results = run_machines(tmp_path, *JOB, "--save_on_each_node", "--resume_from_checkpoint", "latest")
    assert [status for status, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert "Resumed from run/checkpoints/checkpoint-20" in results[0][1]
    assert same_weights(unet_weights(runs[0]), unet_weights(uninterrupted))


@pytest.mark.slow
def test_two_machines_without_a_shared_disk_leave_no_temporary_folders_and_refuse_to_resume(tmp_path):
    job = ["--max_train_steps", "10", "--checkpointing_steps", "5"]
    results = run_machines(tmp_path, *job)
    assert [status for status, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    machine0, machine1 = (tmp_path / f"machine{rank}" / "run" for rank in range(2))
    assert checkpoint_steps(machine0 / "checkpoints") == [5, 10]
    assert not list(machine1.rglob("*checkpoint-*")), "machine 1 keeps no checkpoint and no temporary folder"

    results = run_machines(tmp_path, *job, "--max_train_steps", "20", "--resume_from_checkpoint", "latest")
    expected = f"rank 1 on {os.uname().nodename} lacks run/checkpoints/checkpoint-10/"
    for status, stderr in results:  # each machine's log says what is missing and how to fix it
        assert status != 0 and expected in stderr and "--save_on_each_node" in stderr, stderr[-3000:]
        assert "Resumed from" not in stderr and "train:" not in stderr, "stopped before training"
    assert checkpoint_steps(machine0 / "checkpoints") == [5, 10]
