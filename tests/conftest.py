"""Test-wide setup: 8 simulated CPU devices, quiet TensorFlow, one compilation cache.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before
anything imports jax. Tests that want one device build a one-device mesh.

The environment set here is inherited by the xdist workers and by every
subprocess a test starts (`python -m muscle_jax.main`, launch/local.sh, the
benchmarks), so they all share JAX's persistent compilation cache: the same
tiny programs are compiled once per test session instead of once per run.
The cache is keyed by the program, the flags and the JAX version, so a hit
is the same executable; its directory lives as long as the session. XLA's
optimisations are off for the same reason (below).
"""

import os
import shutil
import tempfile

# Imports numpy only: jax must read the flags later.
from tests.helpers import ONE_THREAD_TENSORFLOW, xla_flags

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(devices=8)).strip()
for _name, _value in ONE_THREAD_TENSORFLOW.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

_OWN_CACHE = "MUSCLE_JAX_TEST_CACHE_OWNER"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # Made by the first pytest process (the xdist controller); its workers inherit it.
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="muscle_jax_test_cache_")
    os.environ[_OWN_CACHE] = str(os.getpid())
# JAX caches only compilations over 1 s by default; the tests' programs are
# mostly smaller and many (measured: a warm cache takes a tiny run's
# train_and_evaluate from 9.9 s to 5.6 s on 2 cores).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests check behaviour, not speed: XLA's optimisation passes cost more
# compile time than they save on these tiny programs (measured: the losses,
# models and bases' loss tests took 80 s with them and 64 s without, -n 2).
# Every comparison in the suite is between runs made the same way.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # noqa: E402  (after the environment, which jax reads on import)

from tests.shared_runs import SharedRuns  # noqa: E402

# The `mesh` and `global_mesh` fixtures of the losses' sharding tests.
pytest_plugins = ["tests.meshes"]


def pytest_unconfigure(config):
    if os.environ.get(_OWN_CACHE) == str(os.getpid()) and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """The heavy tests first: ``@pytest.mark.slow(heavy=True)``.

    Heavy is a slow test of half a minute or more, or of several trainings
    (the benchmarks, the device check, several processes, kill -9, the
    suites' kill-and-resume, the per-method resumes). xdist's default
    scheduler hands each worker a first chunk of consecutive tests, so the
    heavy ones run on one worker, one after another, while the other takes
    the rest; the other slow tests go to whichever worker is free, as the
    unit tests do (all 70 slow tests first would give the one worker about
    590 s of an 880 s suite, estimated from the durations of one run).
    Measured on 2 cores, that beat the alternatives tried: one test at a time
    to whichever worker is free (`--maxschedchunk=1`, longest first: 15 min
    38 s of pytest against 12 min 37 s; the subprocess tests then ran two at a
    time and oversubscribed the cores, 30.0 against 24.6 CPU-minutes) and a
    third worker (16 min 10 s). `--dist worksteal` ended the two workers within
    5 s of each other (against 34 s apart), but its clean-clone run took 11 min
    53 s against 11 min 20 s (one run each: within this machine's noise, so
    the default stays).
    """

    def heavy(item) -> bool:
        slow = item.get_closest_marker("slow")
        return slow is not None and slow.kwargs.get("heavy", False)

    items.sort(key=lambda item: not heavy(item))


@pytest.fixture(scope="session", autouse=True)
def _tensorflow_as_main_configures_it():
    """The in-process training runs get main's TensorFlow settings (no graph optimizer)."""
    from muscle_jax.data import graph

    graph.skip_graph_optimizer()


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory) -> SharedRuns:
    return SharedRuns(tmp_path_factory)
