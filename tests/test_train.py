"""The trainer's pieces and its end-to-end runs on tiny configs.

conftest.py gives 8 simulated CPU devices, so `train_and_evaluate` here runs
data-parallel over 8 devices, as it would on a TPU slice.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from muscle_jax import input_pipeline, train

from .helpers import load_config, mock_tfds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_batch(config):
    return next(train.make_train_batches(config))


def run_steps(config, mesh, num_steps):
    info = input_pipeline.dataset_info(config.data.name)
    graphdef, state, tx = train.create_train_state(config, info)
    p_train, _ = train.compile_steps(graphdef, tx, config, mesh)
    batch = first_batch(config)
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    metrics = None
    for _ in range(num_steps):
        state, metrics = p_train(state, batch)
    return state, metrics, p_train


def test_train_step_is_traced_once():
    config = load_config("tiny")
    _, metrics, p_train = run_steps(config, train.make_mesh(jax.devices()[:1]), 3)
    assert p_train._cache_size() == 1
    assert set(metrics) >= {"supervised", "consistency", "mutual_information", "mask_rate"}


@pytest.mark.parametrize("method", ["fixmatch", "mixmatch", "mean_teacher", "none"])
def test_eight_device_step_equals_one_device_step(method):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    config = load_config("tiny", f"method={method}")
    single, single_metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 2)
    sharded, sharded_metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:8]), 2)
    for key in single_metrics:
        np.testing.assert_allclose(
            sharded_metrics[key], single_metrics[key], rtol=2e-4, atol=1e-6, err_msg=key
        )
    for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    for a, b in zip(
        jax.tree.leaves(sharded.ema_batch_stats), jax.tree.leaves(single.ema_batch_stats)
    ):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_overclustering_and_mi_on_labeled_train():
    config = load_config("tiny")
    config.model.overclustering_heads = 2
    config.loss.iic.on_labeled = True
    _, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 1)
    assert np.isfinite(metrics["overclustering_mutual_information"])


def test_end_to_end_digits_writes_results(tmp_path):
    config = load_config("tiny")
    results = train.train_and_evaluate(config, str(tmp_path))
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["steps"] == config.total_steps == results["steps"]
    assert 0.0 <= written["accuracy"] <= 1.0
    assert len(written["per_class_accuracy"]) == 10
    assert written["num_test_examples"] == input_pipeline.dataset_info("digits").num_test
    assert written["config"]["model"]["name"] == "small_cnn"
    assert written["history"]["step"] == [6, 12]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))


def test_end_to_end_mock_cifar10(tmp_path):
    config = load_config("tiny", "dataset=cifar10")
    # Mocked builders never look prepared; the "download" is a no-op under the mock.
    config.data.download = True
    config.total_steps = 4
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    with mock_tfds(num_examples=64):
        results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 4
    assert np.isfinite(results["accuracy"])


def _run_until_step(config, workdir, stop_after):
    """Runs ``train_and_evaluate``, sending itself SIGTERM after ``stop_after`` steps."""
    calls = {"n": 0}
    real_accumulate = train.monitoring.accumulate

    def counting_accumulate(sums, metrics, step):
        calls["n"] += 1
        if calls["n"] == stop_after:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_accumulate(sums, metrics, step)

    train.monitoring.accumulate = counting_accumulate
    try:
        return train.train_and_evaluate(config, workdir)
    finally:
        train.monitoring.accumulate = real_accumulate


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    config = load_config("tiny")
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))

    stopped = _run_until_step(config, str(tmp_path / "b"), stop_after=5)
    assert stopped == {"status": "preempted", "step": 5}
    assert not (tmp_path / "b" / "results.json").exists()
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))

    assert resumed["history"] == uninterrupted["history"]
    assert resumed["accuracy"] == uninterrupted["accuracy"]
    assert resumed["per_class_accuracy"] == uninterrupted["per_class_accuracy"]
    final = {}
    for name in ("a", "b"):
        ckpt = train.checkpointing.Checkpointer(
            str(tmp_path / name / "checkpoints"), max_to_keep=2, read_only=True
        )
        info = input_pipeline.dataset_info(config.data.name)
        _, template, _ = train.create_train_state(config, info)
        final[name], _ = ckpt.restore(template, expected=train.compatibility(config))
    for a, b in zip(jax.tree.leaves(final["a"]), jax.tree.leaves(final["b"])):
        np.testing.assert_array_equal(a, b)


def test_fine_tune_from_mi_only_pretraining(tmp_path):
    pretrain = load_config("tiny", "method=none")
    pretrain.loss.supervised_weight = 0.0
    train.train_and_evaluate(pretrain, str(tmp_path / "pretrain"))

    finetune = load_config("tiny")
    finetune.init_from = str(tmp_path / "pretrain" / "checkpoints")
    finetune.total_steps = 6
    results = train.train_and_evaluate(finetune, str(tmp_path / "finetune"))
    assert results["steps"] == 6


def test_sigterm_leaves_a_restorable_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "muscle_jax.main",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        "--config.total_steps=100000",
        "--config.log_every_steps=1",
        "--config.eval_every_steps=100000",
        "--config.checkpoint_every_steps=100000",
    ]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 240
    for line in process.stdout:
        if "step 3/" in line or time.time() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "stopped at step" in output
    steps = train.checkpointing.Checkpointer(
        str(workdir / "checkpoints"), max_to_keep=2, read_only=True
    ).all_steps()
    assert steps and steps[-1] >= 3

    config = load_config("tiny")
    config.total_steps = steps[-1] + 2
    config.allow_config_change_on_resume = True  # A shorter run than the stopped one, on purpose.
    results = train.train_and_evaluate(config, str(workdir))
    assert results["steps"] == steps[-1] + 2


def test_bfloat16_compute_keeps_float32_state_and_finite_loss():
    config = load_config("tiny")
    config.model.compute_dtype = "bfloat16"
    state, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 2)
    assert all(np.isfinite(float(value)) for value in metrics.values())
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {np.dtype("float32")}
