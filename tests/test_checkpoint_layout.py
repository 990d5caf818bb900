"""Checkpoints across the models' parameter layouts (`models.PARAMETER_LAYOUT`).

Layout 1 (checkpoints written before their compatibility record named a
layout) held a built-in model's layers beside ``heads``; layout 2 holds them
under ``backbone``. A layout-1 checkpoint resumes where it left off; one in a
layout this code does not know is refused in one line.
"""

import functools
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from muscle_jax import checkpointing, input_pipeline, models, train

from .helpers import load_config
from .test_docs_custom import snippet


class LayoutOne(nnx.Module):
    """The tiny config's small CNN as it held its variables in layout 1: layers beside heads."""

    def __init__(self, model: models.Classifier):
        self.convs = model.backbone.convs
        self.norms = model.backbone.norms
        self.dropout_rate = model.backbone.dropout_rate
        self.heads = model.heads

    def __call__(self, images, *, train, dropout_key=None):
        features = models.SmallCNN.__call__(self, images, train=train, dropout_key=dropout_key)
        return self.heads(features)


def _random_batch(config, seed):
    rng = np.random.default_rng(seed)
    labeled = config.data.batch_size
    unlabeled = labeled * config.data.unlabeled_ratio

    def images(count):
        return rng.uniform(-1, 1, (count, 8, 8, 1)).astype(np.float32)

    return {
        "labeled": images(labeled),
        "label": np.arange(labeled, dtype=np.int32) % config.data.num_classes,
        "labeled_index": np.arange(labeled, dtype=np.int32),
        "unlabeled_a": images(unlabeled),
        "unlabeled_b": images(unlabeled),
        "unlabeled_index": np.arange(unlabeled, dtype=np.int32),
    }


def _record_before_the_layout(config):
    """The compatibility record a checkpoint got before it named a layout."""
    record = train.compatibility(config)
    del record[checkpointing.LAYOUT_KEY]
    return record


def _save(directory, state, record):
    writer = checkpointing.Checkpointer(str(directory), max_to_keep=1)
    writer.save(1, state, {"compatibility": record}, force=True)
    writer.close()
    return checkpointing.Checkpointer(str(directory), max_to_keep=1, read_only=True)


def _assert_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _moved(layout_one: dict) -> dict:
    """Where layout 2 keeps a layout-1 tree's variables, written out by hand."""
    layers = {key: value for key, value in layout_one.items() if key != "heads"}
    return {"backbone": layers, **({"heads": layout_one["heads"]} if "heads" in layout_one else {})}


def test_a_layout_1_checkpoint_of_a_built_in_model_resumes_where_it_left_off(tmp_path):
    config = load_config("tiny")
    config.loss.iic.head = "both"  # The MI head and two over-clustering heads too.
    config.model.overclustering_heads = 2
    info = input_pipeline.dataset_info("digits")
    graphdef, state, tx = train.create_train_state(config, info)
    # The same weights as layout 1 held them, and the optimiser's state for those.
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    old_graphdef, params, batch_stats = nnx.split(LayoutOne(model), nnx.Param, nnx.BatchStat)
    params, batch_stats = params.to_pure_dict(), batch_stats.to_pure_dict()
    assert sorted(params) == ["convs", "heads", "norms"]
    old = state.replace(
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
        ema_batch_stats=jax.tree.map(jnp.copy, batch_stats),
    )

    def step(graphdef):
        return jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx, config=config))

    # A step of the old layout's model: momentum and the EMA leave their initial values.
    old, _ = step(old_graphdef)(old, _random_batch(config, 0))
    reader = _save(tmp_path, old, _record_before_the_layout(config))

    restored, _ = reader.restore(state, expected=train.compatibility(config))
    for field in ("params", "batch_stats", "ema_params", "ema_batch_stats"):
        _assert_equal(getattr(restored, field), _moved(getattr(old, field)))
    assert int(restored.step) == 1
    # The next step goes on exactly as the old layout's would: the optimiser's state
    # (the momentum of every variable) came along with the weights.
    batch = _random_batch(config, 1)
    old_next, old_metrics = step(old_graphdef)(old, batch)
    new_next, new_metrics = step(graphdef)(restored, batch)
    for key in old_metrics:
        np.testing.assert_allclose(new_metrics[key], old_metrics[key], rtol=1e-6, err_msg=key)
    for field in ("params", "batch_stats", "ema_params"):
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
            getattr(new_next, field),
            _moved(getattr(old_next, field)),
        )


def test_a_checkpoint_of_your_backbone_from_before_the_record_resumes_as_it_was(
    tmp_path, monkeypatch
):
    (tmp_path / "mynets.py").write_text(snippet("backbone"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    config = load_config("tiny")
    config.model.name = "mynets:TwoConvs"
    config.model.kwargs = ml_collections.ConfigDict()
    _, state, _ = train.create_train_state(config, input_pipeline.dataset_info("digits"))
    # A backbone of yours was under backbone/ in layout 1 already: nothing moves.
    assert sorted(state.params) == ["backbone", "heads"]
    reader = _save(tmp_path / "checkpoints", state, _record_before_the_layout(config))
    restored, _ = reader.restore(state, expected=train.compatibility(config))
    _assert_equal(restored, state)


def test_a_layout_this_code_does_not_know_is_refused_in_one_line(tmp_path):
    config = load_config("tiny")
    expected = train.compatibility(config)
    assert expected[checkpointing.LAYOUT_KEY] == models.PARAMETER_LAYOUT == 2
    newer = {**expected, checkpointing.LAYOUT_KEY: 3}
    with pytest.raises(checkpointing.IncompatibleCheckpointError) as error:
        checkpointing.check_compatible(newer, expected, where="/runs/a/checkpoints")
    message = str(error.value)
    assert "\n" not in message
    assert "/runs/a/checkpoints holds its model's parameters in layout 3" in message
    assert "restores layout 2" in message and "Start a new --workdir" in message
    # A record from before the layout is no mismatch by itself; another key still is.
    checkpointing.check_compatible(_record_before_the_layout(config), expected, where="w")
    other = {**_record_before_the_layout(config), "model_kwargs": {"widths": [16]}}
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match="model_kwargs") as error:
        checkpointing.check_compatible(other, expected, where="w")
    assert checkpointing.LAYOUT_KEY not in str(error.value)

    # The trainer refuses such a workdir before it writes anything there.
    _, state, _ = train.create_train_state(config, input_pipeline.dataset_info("digits"))
    _save(tmp_path / "checkpoints", state, newer)
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")}
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match="layout 3"):
        train.train_and_evaluate(config, str(tmp_path))
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")} == before
