"""Runs that fit the machine: the memory estimate, the refusal, the workdir left as it was, and
the projected run time."""

import os

import pytest

from muscle_jax import memory_plan, monitoring
from muscle_jax import workdir as workdir_lib

from . import cli_driver
from .helpers import load_config, xla_flags
from .test_custom_data import SMALL_CNN, make_image_folder

GIB = memory_plan.GIB
MIB = 2**20


def protocol_sized():
    """A config of the FixMatch protocol's sizes: WRN-28-2, B = 64, mu = 7, 2**16 steps."""
    config = load_config("tiny")
    config.model.name = "wrn28_2"
    config.data.batch_size = 64
    config.data.unlabeled_ratio = 7
    config.total_steps = 2**16
    return config


# ---------------------------------------------------------------- the estimate


def _steps(train_transient_mib=100, eval_transient_mib=10):
    """Two steps' buffers per device: a 40 MiB state donated to the train step."""
    train = memory_plan.StepMemory(
        arguments=50 * MIB,
        outputs=41 * MIB,
        aliased=40 * MIB,
        temporaries=(train_transient_mib - 1) * MIB,
        code=0,
    )
    evaluation = memory_plan.StepMemory(
        arguments=45 * MIB, outputs=0, aliased=0, temporaries=eval_transient_mib * MIB, code=0
    )
    return train, evaluation


def _plan(platform="cpu", **overrides):
    train, evaluation = _steps()
    arguments = {
        "train": train,
        "evaluation": evaluation,
        "num_local_devices": 2,
        "platform": platform,
        "resident": 1 * GIB,
        "pipeline": 30 * MIB,
        "checkpoint": 40 * MIB,
        "train_batch_per_device": 10 * MIB,
        "eval_batches": 5 * MIB,
        "host_limit_fn": lambda resident: (resident + 3 * GIB, "available RAM"),
        **overrides,
    }
    return memory_plan.estimate(**arguments)


def test_the_transient_of_a_step_leaves_out_what_the_donated_state_shares():
    train, evaluation = _steps()
    assert train.transient == 1 * MIB + 99 * MIB
    assert evaluation.transient == 10 * MIB


def test_on_the_cpu_every_device_step_is_host_memory_on_top_of_what_is_held():
    (host,) = _plan().budgets
    # The larger step (train: 100 MiB a device, two devices) beside the resident set.
    assert host.parts == {
        "held now": 1 * GIB,
        "step": 200 * MIB,
        "input pipeline": 30 * MIB,
        "checkpoint copy": 40 * MIB,
        # What grows beyond the counted parts: a fixed part and a share of the step.
        "allowance": memory_plan.ALLOWANCE_BYTES + int(memory_plan.ALLOWANCE_OF_STEP * 200 * MIB),
    }
    assert host.needed == 1 * GIB + 270 * MIB + host.parts["allowance"]
    assert host.limit == 4 * GIB and host.fits


def test_the_config_limit_replaces_the_detected_one():
    plan = _plan(memory_limit_gb=1.0)
    (host,) = plan.budgets
    assert host.limit == 1 * GIB and host.limit_source == "memory_limit_gb"
    assert not plan.fits


def test_an_accelerator_counts_its_device_and_the_host_apart():
    host, device = _plan("gpu", device_limit=2 * GIB).budgets
    assert host.parts == {
        "held now": 1 * GIB,
        "input pipeline": 35 * MIB,
        "checkpoint copy": 40 * MIB,
        "allowance": memory_plan.ALLOWANCE_BYTES,
    }
    # Per device: the train step's arguments and transient, and the prefetched batches.
    assert device.parts == {"step": 150 * MIB, "prefetched batches": 20 * MIB}
    assert device.limit == 2 * GIB and device.limit_source == "bytes_limit"
    assert _plan("gpu", device_limit=None).budgets == (host,)  # Unknown: not checked.
    assert _plan("gpu", device_limit=2 * GIB, memory_limit_gb=0.1).budgets[1].limit < 2 * GIB


def test_the_input_pipeline_holds_prefetched_and_parallel_batches_and_a_shuffle_block():
    assert (
        memory_plan.input_pipeline_bytes(
            batch_bytes=1000,
            example_bytes=10,
            stream_block_examples=[40, 500],
            prefetch=2,
            parallel_batches=4,
        )
        == (2 + 1 + 4) * 1000 + 540 * 10
    )


def test_the_refusal_names_the_need_the_limit_and_the_knobs():
    config = protocol_sized()
    plan = _plan(memory_limit_gb=1.0)
    advice = memory_plan.knobs(config, images_per_step=960, platform="cpu")
    line = memory_plan.refusal(plan, advice)
    assert "\n" not in line
    assert "needs ~1.4 GiB of the 1.0 GiB of host RAM" in line
    assert "limit: memory_limit_gb" in line
    for knob in (
        "data.batch_size (64)",
        "data.unlabeled_ratio (7; a step holds 960 images)",
        "model.name than wrn28_2",
        "MUSCLE_JAX_CONV_BACKWARD=xla",
        "--config.memory_limit_gb=N",
    ):
        assert knob in line
    # The CPU's kernel gradient is no knob on an accelerator.
    assert "MUSCLE_JAX_CONV" not in memory_plan.knobs(config, images_per_step=960, platform="gpu")


def test_the_detected_host_limit_is_what_is_held_plus_what_is_available():
    limit, source = memory_plan.host_limit(2 * GIB)
    assert limit > 2 * GIB and "this process's" in source


# ---------------------------------------------------------------- the workdir put back


def _listing(path):
    found = {}
    for root, dirs, names in os.walk(path):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), path)] = None
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as handle:
                found[os.path.relpath(full, path)] = handle.read()
    return found


def test_restore_removes_what_a_run_added_and_cuts_back_what_it_appended(tmp_path):
    (tmp_path / "checkpoints" / "6").mkdir(parents=True)
    (tmp_path / "checkpoints" / "6" / "state").write_bytes(b"weights")
    (tmp_path / "console.log").write_text("the first run\n")
    before = _listing(tmp_path)
    snapshot = workdir_lib.snapshot(str(tmp_path))
    (tmp_path / "data_cache").mkdir()
    (tmp_path / "data_cache" / "pets_abc.npz").write_bytes(b"decoded")
    (tmp_path / "checkpoints" / "tmp_12").mkdir()
    (tmp_path / "run.lock").write_text("{}")
    with open(tmp_path / "console.log", "a") as handle:
        handle.write("a refused run\n")
    workdir_lib.restore(snapshot)
    assert _listing(tmp_path) == before


def test_restore_removes_a_workdir_the_run_created_with_its_new_parents(tmp_path):
    workdir = tmp_path / "new" / "runs" / "a"
    snapshot = workdir_lib.snapshot(str(workdir))
    (workdir / "data_cache").mkdir(parents=True)
    (workdir / "console.log").write_text("x")
    workdir_lib.restore(snapshot)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow(heavy=True)
def test_a_run_that_cannot_fit_is_refused_in_one_line_and_the_workdir_is_as_it_was(tmp_path):
    folder = make_image_folder(tmp_path / "pets", train=6, test=3, unlabeled=3)
    new_workdir = tmp_path / "new" / "run"  # Neither it nor its parent exists.
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    before = _listing(used)
    tiny_limit = "--config.memory_limit_gb=0.01"
    outcomes = cli_driver.run_command_lines(
        "muscle_jax.main",
        [
            [  # An image folder: its decoded cache would be the workdir's first file.
                "--config=configs/image_folder.py:num_labeled=6",
                "--config.data.image_size=16",
                f"--config.data.path={folder}",
                *SMALL_CNN,
                "--config.data.batch_size=6",
                "--config.data.eval_batch_size=8",
                f"--workdir={new_workdir}",
                tiny_limit,
            ],
            ["--config=configs/tiny.py", f"--workdir={used}", tiny_limit],
        ],
        env={**os.environ, "XLA_FLAGS": xla_flags()},  # One device, as a user's machine.
    )
    for outcome in outcomes:
        assert outcome.returncode == 2, outcome.stderr[-3000:]
        assert "Traceback" not in outcome.stderr
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, outcome.stderr[-3000:]
        assert "needs ~" in errors[0] and "of the 10 MiB of host RAM" in errors[0]
        for knob in ("data.batch_size", "data.unlabeled_ratio", "model.name", "memory_limit_gb"):
            assert knob in errors[0]
    assert not (tmp_path / "new").exists()
    assert _listing(used) == before


# ---------------------------------------------------------------- the projected run time


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0 s"),
        (40, "40 s"),
        (720, "12 min"),
        (11_400, "3 h 10 min"),
        (2 * 86_400 + 7_300, "2 d 2 h"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert monitoring.format_duration(seconds) == text


def test_a_long_cpu_run_is_projected_and_named_with_its_smaller_settings():
    config = protocol_sized()
    line, advice = monitoring.run_time_projection(
        seconds_per_step=0.174, steps_left=65_530, config=config, platform="cpu"
    )
    assert line.startswith("projected: 3 h 10 min for the 65530 steps left (of 65536)")
    assert "0.174 s/step" in line
    for setting in ("total_steps, 65536", "data.batch_size, 64", "model.name, wrn28_2"):
        assert setting in advice
    assert advice.endswith("The run goes on.")


def test_a_short_cpu_run_or_an_accelerator_run_gets_no_advice():
    config = protocol_sized()
    assert (
        monitoring.run_time_projection(
            seconds_per_step=0.1, steps_left=1000, config=config, platform="cpu"
        )[1]
        is None
    )
    assert (
        monitoring.run_time_projection(
            seconds_per_step=1.0, steps_left=65_530, config=config, platform="gpu"
        )[1]
        is None
    )


def test_the_limit_key_is_checked_and_an_older_checkpoint_without_it_resumes_unchanged():
    from muscle_jax import config_validation

    config = load_config("digits")
    config.memory_limit_gb = -1.0
    with pytest.raises(config_validation.ConfigError, match=r"memory_limit_gb=-1.0 must be >= 0"):
        config_validation.validate_config(config, num_devices=1, num_processes=1)
    config.memory_limit_gb = 0.0
    saved = config.to_dict()
    del saved["memory_limit_gb"]  # Written before the key existed.
    assert config_validation.resume_changes(saved, config.to_dict()) == ([], [])
    config.memory_limit_gb = 8.0  # Changeable on resume: it decides nothing that is trained.
    assert config_validation.resume_changes(saved, config.to_dict()) == (
        [],
        ["memory_limit_gb: 0.0 -> 8.0"],
    )
