"""How main decides to start JAX's distributed runtime (no runtime is started here)."""

import pytest

from muscle_jax import distributed

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
CLUSTER_ENV = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NPROCS", "TPU_WORKER_HOSTNAMES")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ENV + CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)


def resolve(**flags):
    return distributed.resolve(
        coordinator_address=flags.get("address"),
        num_processes=flags.get("count"),
        process_id=flags.get("index"),
        force=flags.get("force", False),
    )


def test_one_process_by_default():
    assert resolve() == distributed.Setup("single")


def test_explicit_flags_and_environment(monkeypatch):
    assert resolve(address="10.0.0.1:1234", count=4, index=3) == distributed.Setup(
        "explicit", "10.0.0.1:1234", 4, 3
    )
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:5000")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert resolve() == distributed.Setup("explicit", "127.0.0.1:5000", 2, 1)
    # A flag wins over its environment variable.
    assert resolve(index=0).process_id == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"address": "h:1"}, "missing: process count, process id"),
        ({"count": 2, "index": 0}, "missing: coordinator address"),
        ({"address": "h:1", "count": 2, "index": 2}, r"process id 2 must lie in \[0, 2\)"),
        ({"address": "h:1", "count": 0, "index": 0}, "must be >= 1"),
    ],
)
def test_incomplete_settings_are_refused_with_the_fix(flags, message):
    with pytest.raises(distributed.DistributedSetupError, match=message):
        resolve(**flags)


def test_a_bad_environment_value_is_named(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(distributed.DistributedSetupError, match="JAX_NUM_PROCESSES='two'"):
        resolve()


@pytest.mark.parametrize(
    "environment, cluster",
    [
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, "SLURM"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # One task: one process.
        ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, "Cloud TPU pod slice"),
        ({"TPU_WORKER_HOSTNAMES": "w0"}, None),  # A single-host TPU VM.
    ],
)
def test_clusters_are_recognised_from_their_environment(monkeypatch, environment, cluster):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert distributed.detected_cluster() == cluster
    assert resolve().kind == ("detected" if cluster else "single")


def test_distributed_flag_forces_detection():
    assert resolve(force=True) == distributed.Setup("detected")


def test_the_launch_scripts_default_is_one_process_per_explicit_count():
    # local.sh with one process sets the variables for a single process: nothing to start.
    setup = resolve(address="127.0.0.1:1", count=1, index=0)
    distributed.initialize(setup, heartbeat_timeout_seconds=5)
    import jax

    assert jax.process_count() == 1
