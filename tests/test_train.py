"""The trainer's pieces and its end-to-end runs on tiny configs.

conftest.py gives 8 simulated CPU devices, so `train_and_evaluate` here runs
data-parallel over 8 devices, as it would on a TPU slice.
"""

import json
import os

import jax
import numpy as np
import pytest

from muscle_jax import input_pipeline, loop, train

from .helpers import latest_state, load_config, mock_tfds
from .shared_runs import PREEMPTED_AT, short_config

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
    # The memory estimate made before the first step, beside the peak the run reached.
    (host,) = written["memory"]["estimates"]
    assert host["memory"] == "host RAM" and "this process's" in host["limit_source"]
    assert host["estimated_bytes"] == sum(host["parts_bytes"].values()) <= host["limit_bytes"]
    assert written["memory"]["measured_peak_rss_bytes"] >= host["parts_bytes"]["held now"] > 0


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


# ------------------------------------------------ confusion matrix, lost classes


def _hand_made_hits():
    """`per_class_hits` on 6 images of 3 classes (one padding row) with fixed predictions."""
    import types

    import jax.numpy as jnp

    from muscle_jax import evaluation

    predicted = np.array([0, 0, 1, 0, 2, 2, 1])  # The last row is padding.
    labels = np.array([0, 0, 0, 1, 2, 2, 2])

    def model(images, train):
        del images, train
        return types.SimpleNamespace(logits=jnp.eye(3)[predicted])  # What the eval reads.

    batch = {
        "image": jnp.zeros((7, 1)),
        "label": jnp.asarray(labels),
        "mask": jnp.asarray([True] * 6 + [False]),
    }
    # One compiled program (eager, each op compiles on its own), summed as the trainer sums.
    hits = jax.jit(lambda batch: evaluation.per_class_hits(model, batch, num_classes=3))(batch)
    return evaluation.accumulate_hits([hits])


def test_confusion_matrix_counts_and_recall_on_a_hand_made_case():
    from muscle_jax import diagnostics, evaluation

    hits = _hand_made_hits()
    # Rows true, columns predicted; the padding row (true 2, predicted 1) counts for nothing.
    np.testing.assert_array_equal(hits["confusion"], [[2, 1, 0], [1, 0, 0], [0, 0, 2]])
    assert hits["confusion"].sum() == hits["count"].sum() == 6
    np.testing.assert_array_equal(hits["confusion"].sum(axis=1), hits["count"])
    np.testing.assert_array_equal(np.diag(hits["confusion"]), hits["correct"])
    np.testing.assert_array_equal(hits["predicted"], hits["confusion"].sum(axis=0))
    _, per_class = evaluation.accuracies(hits["correct"], hits["count"])
    assert diagnostics.recalls(hits["confusion"]) == per_class == [2 / 3, 0.0, 1.0]


def test_classes_lost_and_top_confusions_from_a_hand_made_matrix():
    from muscle_jax import diagnostics

    confusion = np.array(
        [
            [8, 2, 0, 0],  # recall 0.8
            [7, 3, 0, 0],  # recall 0.3: at the threshold, not lost
            [0, 9, 1, 0],  # recall 0.1: lost, merged into class 1
            [0, 0, 0, 0],  # absent from the test set: not lost
        ]
    )
    recall = diagnostics.recalls(confusion)
    assert recall == [0.8, 0.3, 0.1, None]
    assert diagnostics.LOST_CLASS_RECALL == 0.3
    assert diagnostics.classes_lost_entry(recall) == {"threshold": 0.3, "classes": [2], "count": 1}
    assert diagnostics.top_confusions(confusion, limit=2) == [(2, 1, 9), (1, 0, 7)]
    assert diagnostics.unpredicted_classes(confusion.sum(axis=0)) == [3]


def test_unlabeled_sample_is_the_pools_first_images_and_fixed():
    from muscle_jax.data import splits

    config = load_config("tiny")
    config.data.num_validation = 3
    config.data.exclude_labeled_from_unlabeled = True
    source = input_pipeline.open_dataset(config.data)
    labels = source.train_labels()

    def sample(seed):
        return input_pipeline.unlabeled_sample_indices(
            config.data, source=source, seed=seed, size=loop.UNLABELED_SAMPLE_SIZE
        )

    indices = sample(0)
    np.testing.assert_array_equal(indices, sample(0))  # A function of the config and seed.
    held_out = splits.select_validation_indices(labels, num_per_class=3, seed=0, num_classes=10)
    labeled = splits.select_labeled_indices(
        labels, num_labeled=40, seed=0, num_classes=10, exclude=held_out
    )
    pool = np.setdiff1d(np.arange(len(labels)), np.concatenate([held_out, labeled]))
    np.testing.assert_array_equal(indices, pool[: loop.UNLABELED_SAMPLE_SIZE])
    images, sample_labels = input_pipeline.unlabeled_sample(
        config.data, source=source, seed=0, size=loop.UNLABELED_SAMPLE_SIZE
    )
    assert len(images) == len(sample_labels) == loop.UNLABELED_SAMPLE_SIZE
    np.testing.assert_array_equal(sample_labels, labels[indices])


def test_results_hold_the_final_confusion_matrix_and_the_sample_histograms(shared_runs):
    from muscle_jax import diagnostics

    workdir, _ = shared_runs.original("tiny")
    written = json.loads((workdir / "results.json").read_text())
    confusion = np.array(written["confusion_matrix"])
    assert confusion.shape == (10, 10)
    assert confusion.sum() == written["num_test_examples"]
    # The same evaluation as the per-class and the final accuracy.
    assert diagnostics.recalls(confusion) == pytest.approx(written["per_class_accuracy"])
    assert np.trace(confusion) / confusion.sum() == pytest.approx(written["final_accuracy"])
    lost = diagnostics.lost_classes(written["per_class_accuracy"])
    assert written["classes_lost"] == {"threshold": 0.3, "classes": lost, "count": len(lost)}
    # One histogram per evaluation and model, each over the whole (fixed) sample.
    sample = written["unlabeled_sample"]
    config = load_config("tiny")
    source = input_pipeline.open_dataset(config.data)
    indices = input_pipeline.unlabeled_sample_indices(
        config.data, source=source, seed=config.seed, size=loop.UNLABELED_SAMPLE_SIZE
    )
    truth = np.bincount(source.train_labels()[indices], minlength=10)
    assert sample == {"size": loop.UNLABELED_SAMPLE_SIZE, "true_per_class": truth.tolist()}
    history = written["history"]
    for key in ("unlabeled_predicted_ema", "unlabeled_predicted_raw"):
        assert len(history[key]) == len(history["step"])
        assert [sum(counts) for counts in history[key]] == [sample["size"]] * len(history["step"])
    summary = (workdir / "summary.md").read_text()
    assert f"{diagnostics.LOST_CLASS_RULE} at the final evaluation, EMA model): {len(lost)}" in (
        summary
    )
    assert "| 0 | " + " | ".join(map(str, confusion[0])) + " |" in summary


def test_summary_of_many_classes_shows_the_largest_confusions_not_the_matrix(tmp_path):
    from muscle_jax import report

    num_classes = 25
    confusion = np.eye(num_classes, dtype=int) * 10
    confusion[3] = 0
    confusion[3, 7] = 10  # Class 3 merged into 7.
    confusion[5, 5], confusion[5, 6] = 6, 4
    results = {
        "accuracy": 0.9,
        "accuracy_steps": [4],
        "raw_accuracy": 0.9,
        "final_accuracy": 0.9,
        "num_test_examples": int(confusion.sum()),
        "steps": 4,
        "run": {
            "wall_seconds": 1.0,
            "started_at": "a",
            "ended_at": "b",
            "device_count": 1,
            "platform": "cpu",
            "git_commit": None,
        },
        "per_class_accuracy": [row[k] / row.sum() for k, row in enumerate(confusion)],
        "confusion_matrix": confusion.tolist(),
        "unlabeled_sample": {"size": 50, "true_per_class": [2] * num_classes},
    }
    predicted = [2] * num_classes
    predicted[3], predicted[7] = 0, 4  # Class 3's output is dead on the sample.
    history = {
        "step": [4],
        "ema_accuracy": [0.9],
        "raw_accuracy": [0.9],
        "unlabeled_predicted_ema": [predicted],
    }
    report.write_summary(
        str(tmp_path),
        config=load_config("tiny"),
        history=history,
        train_history={},
        results=results,
    )
    summary = (tmp_path / "summary.md").read_text()
    assert "true \\ predicted" not in summary  # No 25 x 25 table.
    assert "| 3 | 7 | 10 | 1.00 |" in summary and "| 5 | 6 | 4 | 0.40 |" in summary
    assert "EMA model): 1 (3)." in summary  # Class 3 is lost, 5 (recall 0.6) is not.
    assert "| 3 | 0.0000 | 0 | 2 |" in summary  # Never predicted on the unlabeled sample.
    assert "| 4 | 0.9000 | 0.9000 | 1 |" in summary  # One class unpredicted at step 4.


def test_a_history_resumed_from_before_the_sample_gets_none_for_its_evaluations(tmp_path):
    from muscle_jax import report

    old = {"step": [6], "ema_accuracy": [0.5], "raw_accuracy": [0.4]}
    history = loop.Record.resumed({"history": old}).history
    assert history["unlabeled_predicted_ema"] == history["unlabeled_predicted_raw"] == [None]
    history["step"].append(12)  # The next evaluation, after the resume.
    history["ema_accuracy"].append(0.6)
    history["raw_accuracy"].append(0.5)
    history["unlabeled_predicted_ema"].append([5] * 9 + [0])
    report.write_summary(
        str(tmp_path), config=load_config("tiny"), history=history, train_history={}
    )
    summary = (tmp_path / "summary.md").read_text()
    assert "| 6 | 0.5000 | 0.4000 | - |" in summary and "| 12 | 0.6000 | 0.5000 | 1 |" in summary


def test_a_run_shorter_than_its_ema_horizon_says_so(shared_runs):
    # The tiny run: EMA decay 0.9 (an average over ~10 steps) in 12 steps.
    workdir, _ = shared_runs.original("tiny")
    written = json.loads((workdir / "results.json").read_text())
    note = written["ema_note"]
    assert note.startswith("ema_decay=0.9 averages the EMA model over ~10 steps, more than a")
    assert "--config.ema_decay=0.167" in note
    assert f"**Note:** {note}" in (workdir / "summary.md").read_text()
    assert note in (workdir / "console.log").read_text()
    assert written["labeled_per_class"] == [4] * 10  # num_labeled=40 over 10 classes.


def test_num_labeled_zero_sizes_the_terms_state_by_the_datas_classes():
    config = load_config("tiny")
    config.data.num_labeled = 0
    info = input_pipeline.dataset_info("digits")
    labels = np.array([0] * 5 + [1] * 2 + [2] * 9 + list(range(3, 10)) * 3)
    spec = train.state_spec(config, info, labels)
    assert spec.labeled_class_counts == (5, 2, 9, *[3] * 7)
    config.data.num_validation = 1  # One a class held out, never labeled.
    assert train.state_spec(config, info, labels).labeled_class_counts == (4, 1, 8, *[2] * 7)
    with pytest.raises(ValueError, match="pass the training labels"):
        train.state_spec(config, info)


@pytest.mark.slow
def test_a_profile_of_a_few_steps_is_written_for_tensorboard_and_every_metric_is_recorded(
    tmp_path,
):
    config = short_config()
    config.profile_steps = 2
    config.profile_first_step = 1
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    # jax.profiler's trace, where TensorBoard's profile tab reads it.
    assert list((tmp_path / "run" / "plugins" / "profile").rglob("*.xplane.pb"))
    history = results["train_history"]
    # Every metric the step returns, not only the loss terms: FixMatch's mask rate too.
    assert {"total", "mutual_information", "mask_rate", "consistency_weight"} <= set(history)
    assert all(len(values) == len(history["step"]) for values in history.values())
