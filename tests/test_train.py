"""The trainer's pieces and its end-to-end runs on tiny configs.

conftest.py gives 8 simulated CPU devices, so `train_and_evaluate` here runs
data-parallel over 8 devices, as it would on a TPU slice.
"""

import json
import os

import jax
import numpy as np
import pytest

from muscle_jax import input_pipeline, train

from .helpers import latest_state, load_config, mock_tfds
from .shared_runs import PREEMPTED_AT

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


@pytest.mark.slow
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


def test_end_to_end_digits_writes_results(shared_runs):
    workdir, outcome = shared_runs.original("tiny")
    config = load_config("tiny")
    written = json.loads((workdir / "results.json").read_text())
    assert written["steps"] == config.total_steps == outcome["results"]["steps"]
    assert 0.0 <= written["accuracy"] <= 1.0
    assert len(written["per_class_accuracy"]) == 10
    assert written["num_test_examples"] == input_pipeline.dataset_info("digits").num_test
    assert written["config"]["model"]["name"] == "small_cnn"
    assert written["history"]["step"] == [6, 12]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
    # The unlabeled pool as it was read: digits' whole training split, balanced.
    from muscle_jax.data import digits

    pool = written["unlabeled_pool"]
    assert pool["imbalance_ratio"] == 1.0 and pool["unlabeled_only"] == 0
    assert pool["per_class"] == np.bincount(digits.load()[1], minlength=10).tolist()
    assert written["validation"] is None and written["class_names"] is None


@pytest.mark.slow
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


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted(shared_runs, tmp_path):
    config = load_config("tiny")
    reference, uninterrupted = shared_runs.original("tiny")
    workdir, stopped = shared_runs.copy("tiny_preempted", tmp_path / "b")
    assert stopped["stopped"] == {"status": "preempted", "step": PREEMPTED_AT}
    assert not (workdir / "results.json").exists()
    resumed = train.train_and_evaluate(config, str(workdir))
    # The tests' configs draw no curves.png (plot_curves=False); the report is written.
    assert (workdir / "summary.md").exists() and not (workdir / "curves.png").exists()
    assert (reference / "curves.png").exists()

    assert resumed["history"] == uninterrupted["results"]["history"]
    assert resumed["accuracy"] == uninterrupted["results"]["accuracy"]
    assert resumed["per_class_accuracy"] == uninterrupted["results"]["per_class_accuracy"]
    leaves = zip(
        jax.tree.leaves(latest_state(reference, config)),
        jax.tree.leaves(latest_state(workdir, config)),
        strict=True,
    )
    for a, b in leaves:
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_fine_tune_from_mi_only_pretraining(tmp_path):
    pretrain = load_config("tiny", "method=none")
    pretrain.loss.supervised_weight = 0.0
    train.train_and_evaluate(pretrain, str(tmp_path / "pretrain"))

    finetune = load_config("tiny")
    finetune.init_from = str(tmp_path / "pretrain" / "checkpoints")
    finetune.total_steps = 6
    results = train.train_and_evaluate(finetune, str(tmp_path / "finetune"))
    assert results["steps"] == 6


def test_bfloat16_compute_keeps_float32_state_and_finite_loss():
    config = load_config("tiny")
    config.model.compute_dtype = "bfloat16"
    state, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 2)
    assert all(np.isfinite(float(value)) for value in metrics.values())
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {np.dtype("float32")}
