"""Launch scripts: syntax, shellcheck, the TPU --dry-run, remote quoting, SLURM requeue.

Nothing here reaches a cloud or a cluster: `gcloud`, `srun` and `scontrol` are
replaced by fakes on PATH that record how they were called.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_SCRIPT = REPO / "launch" / "tpu_pod.sh"
SLURM_SCRIPT = REPO / "launch" / "gpu_slurm.sbatch"
SCRIPTS = [TPU_SCRIPT, SLURM_SCRIPT]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

TPU_ARGS = [
    "--tpu=my-v4-32",
    "--zone=us-central2-b",
    "--config=configs/cifar100.py:num_labeled=2500",
    "--workdir=gs://my-bucket/muscle/c100",
]


def _fake_command(bin_dir: pathlib.Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def fake_gcloud(tmp_path):
    """A `gcloud` that appends its arguments, NUL-separated, one call per file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "gcloud_calls"
    calls.mkdir()
    _fake_command(
        bin_dir,
        "gcloud",
        f'n=$(ls {calls} | wc -l); printf "%s\\0" "$@" > {calls}/call_$n\n',
    )
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    for key in ("TPU_NAME", "ZONE", "PROJECT", "CONFIG", "WORKDIR", "REPO_URL", "DATA_DIR"):
        env.pop(key, None)
    return env, calls


def _recorded_calls(calls: pathlib.Path) -> list[list[str]]:
    files = sorted(calls.iterdir(), key=lambda p: int(p.name.split("_")[1]))
    return [p.read_text().split("\0")[:-1] for p in files]


def _run(args, env=None, **kwargs):
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = _run(["bash", "-n", str(script)])
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    result = _run(["shellcheck", str(script)])
    assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------- TPU pod


def test_tpu_dry_run_prints_setup_and_run_on_all_workers(fake_gcloud):
    env, calls = fake_gcloud
    result = _run(
        ["bash", str(TPU_SCRIPT), "--dry-run", *TPU_ARGS, "--", "--config.total_steps=20000"],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not list(calls.iterdir()), "--dry-run must not call gcloud"
    lines = result.stdout.strip().splitlines()
    ssh_lines = [line for line in lines if "gcloud compute tpus tpu-vm ssh" in line]
    assert len(ssh_lines) == 2  # setup, then run.
    for line in ssh_lines:
        assert "my-v4-32" in line and "--zone=us-central2-b" in line and "--worker=all" in line
    setup, train = ssh_lines
    assert "pip install" in setup and '-e ".[train]"' in setup
    assert '"jax[tpu]==0.10.2"' in setup  # setup.cfg's jax pin.
    assert "python -m muscle_jax.main --distributed" in train
    assert "--config=configs/cifar100.py:num_labeled=2500" in train
    assert "--workdir=gs://my-bucket/muscle/c100" in train
    assert "--config.total_steps=20000" in train
    # Without --repo-url the committed tree is copied to every worker.
    assert any(line.startswith("git -C") and " archive " in line for line in lines)
    assert any("tpu-vm scp" in line and "--worker=all" in line for line in lines)


def test_tpu_dry_run_options(fake_gcloud):
    env, _ = fake_gcloud
    env = dict(env, TPU_NAME="env-tpu", ZONE="europe-west4-a", PROJECT="proj")
    result = _run(
        [
            "bash",
            str(TPU_SCRIPT),
            "--dry-run",
            "--skip-setup",
            "--detach",
            "--config=configs/cifar10.py",
            "--workdir=gs://b/w",
            "--data-dir=gs://b/tfds",
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # no setup.
    assert "env-tpu" in lines[0] and "--project=proj" in lines[0]
    assert "--config.data.data_dir=gs://b/tfds" in lines[0]
    assert "nohup python -m muscle_jax.main" in lines[0]


def test_tpu_dry_run_with_repo_url(fake_gcloud):
    env, _ = fake_gcloud
    result = _run(
        ["bash", str(TPU_SCRIPT), "--dry-run", *TPU_ARGS, "--repo-url=https://example.com/m.git"],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "git clone --quiet https://example.com/m.git" in result.stdout
    assert "archive" not in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (TPU_ARGS[1:], "TPU name"),
        ([a for a in TPU_ARGS if not a.startswith("--zone")], "zone"),
        ([a for a in TPU_ARGS if not a.startswith("--config")], "config"),
        (TPU_ARGS[:-1], "workdir"),
        ([*TPU_ARGS[:-1], "--workdir=/tmp/local"], "gs://"),
        ([*TPU_ARGS[:2], "--config=configs/nope.py", TPU_ARGS[3]], "configs/nope.py"),
        ([*TPU_ARGS, "--bogus"], "--bogus"),
        ([*TPU_ARGS, "--jax-version=latest"], "latest"),
    ],
)
def test_tpu_usage_errors(fake_gcloud, args, fragment):
    env, calls = fake_gcloud
    result = _run(["bash", str(TPU_SCRIPT), "--dry-run", *args], env=env)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert not list(calls.iterdir())


def test_tpu_help():
    result = _run(["bash", str(TPU_SCRIPT), "--help"])
    assert result.returncode == 0
    assert "--dry-run" in result.stdout and "TPU_NAME" in result.stdout


def test_tpu_remote_command_keeps_arguments_intact(fake_gcloud, tmp_path):
    """Runs the script against the fake gcloud, then the recorded remote command in bash."""
    env, calls = fake_gcloud
    tricky = "--config.init_from=gs://b/it's a $HOME dir"
    result = _run(
        [
            "bash",
            str(TPU_SCRIPT),
            *TPU_ARGS,
            "--repo-url=https://example.com/m.git",
            "--",
            tricky,
            "--config.total_steps=7",
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    setup_call, train_call = _recorded_calls(calls)
    assert setup_call[:4] == ["compute", "tpus", "tpu-vm", "ssh"]
    assert "--worker=all" in train_call
    command = next(a for a in train_call if a.startswith("--command="))[len("--command=") :]
    setup_command = next(a for a in setup_call if a.startswith("--command="))
    assert _run(["bash", "-n", "-c", setup_command[len("--command=") :]]).returncode == 0

    # A worker's home: the checkout with its venv, and a `python` that records argv.
    home = tmp_path / "home"
    (home / "muscle_jax" / ".venv" / "bin").mkdir(parents=True)
    (home / "muscle_jax" / ".venv" / "bin" / "activate").write_text("")
    worker_bin = tmp_path / "worker_bin"
    worker_bin.mkdir()
    argv_file = tmp_path / "argv"
    _fake_command(worker_bin, "python", f'printf "%s\\0" "$@" > {argv_file}\n')
    worker_env = dict(os.environ, PATH=f"{worker_bin}:{os.environ['PATH']}", HOME=str(home))
    ran = subprocess.run(
        ["bash", "-c", command], cwd=home, env=worker_env, capture_output=True, timeout=30
    )
    assert ran.returncode == 0, ran.stderr
    assert argv_file.read_text().split("\0")[:-1] == [
        "-m",
        "muscle_jax.main",
        "--distributed",
        "--config=configs/cifar100.py:num_labeled=2500",
        "--workdir=gs://my-bucket/muscle/c100",
        tricky,
        "--config.total_steps=7",
    ]


# ---------------------------------------------------------------- SLURM


def test_slurm_header_requeues_on_signal():
    text = SLURM_SCRIPT.read_text()
    assert "#SBATCH --signal=B:TERM@120" in text
    assert "#SBATCH --requeue" in text
    assert "scontrol requeue" in text


def test_slurm_dry_run_and_usage():
    env = dict(os.environ, DRY_RUN="1", SLURM_SUBMIT_DIR=str(REPO), VENV="/nonexistent")
    result = _run(
        ["bash", str(SLURM_SCRIPT), "configs/cifar10.py", "/shared/w", "--config.seed=1"], env=env
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("srun ")
    assert "python -m muscle_jax.main --distributed" in line
    assert "--config=configs/cifar10.py" in line and "--workdir=/shared/w" in line
    assert "--config.seed=1" in line
    missing = _run(["bash", str(SLURM_SCRIPT)], env=env)
    assert missing.returncode == 2 and "CONFIG WORKDIR" in missing.stderr


def test_slurm_forwards_sigterm_and_requeues(tmp_path):
    """SIGTERM to the batch script reaches the tasks, and the job is requeued after they exit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    # The fake srun stands for the trainer: it checkpoints (logs) on SIGTERM and exits 0.
    # Its sleep holds none of the script's pipes: a SIGTERM that lands between
    # `sleep &` and `child=$!` leaves the sleep running, and it must not keep
    # communicate() waiting (seen on a loaded 2-core CI machine).
    _fake_command(
        bin_dir,
        "srun",
        f"trap 'kill $child 2>/dev/null; echo srun-got-term >> {log}; exit 0' TERM\n"
        f'echo "srun $*" >> {log}\n'
        "sleep 30 >/dev/null 2>&1 & child=$!\nwait\n",
    )
    _fake_command(bin_dir, "scontrol", f'echo "scontrol $*" >> {log}\n')
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_SUBMIT_DIR=str(REPO),
        VENV="/nonexistent",
    )
    process = subprocess.Popen(
        ["bash", str(SLURM_SCRIPT), "configs/cifar10.py", str(tmp_path / "w")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not (log.exists() and "srun " in log.read_text()):
        assert time.monotonic() < deadline, "the script never started srun"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    events = log.read_text().splitlines()
    assert events[0].startswith("srun --kill-on-bad-exit=1")
    assert events[1:] == ["srun-got-term", "scontrol requeue 4242"]


def test_slurm_no_requeue_after_a_normal_exit(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    _fake_command(bin_dir, "srun", f'echo "srun $*" >> {log}\nexit 3\n')
    _fake_command(bin_dir, "scontrol", f'echo "scontrol $*" >> {log}\n')
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        SLURM_JOB_ID="1",
        SLURM_SUBMIT_DIR=str(REPO),
        VENV="/nonexistent",
    )
    result = _run(["bash", str(SLURM_SCRIPT), "configs/cifar10.py", str(tmp_path / "w")], env=env)
    assert result.returncode == 3  # the trainer's exit status.
    assert "scontrol" not in log.read_text()


LOCAL_SCRIPT = REPO / "launch" / "local.sh"


def test_local_uses_the_active_virtual_environment_and_says_when_it_cannot(tmp_path):
    # A virtual environment whose python cannot import muscle_jax: named in the error.
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    _fake_command(venv_bin, "python", "exit 1\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHON"}
    env["VIRTUAL_ENV"] = str(tmp_path / "venv")
    result = _run(["bash", str(LOCAL_SCRIPT), "1", "--config=configs/tiny.py"], env=env)
    assert result.returncode == 2
    assert f"{venv_bin / 'python'} cannot import muscle_jax" in result.stderr
    assert "PYTHON=" in result.stderr
    # PYTHON wins over the environment.
    env["PYTHON"] = str(tmp_path / "missing_python")
    result = _run(["bash", str(LOCAL_SCRIPT), "1", "--config=configs/tiny.py"], env=env)
    assert result.returncode == 2 and "missing_python cannot import muscle_jax" in result.stderr
