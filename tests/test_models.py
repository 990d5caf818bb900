"""Tests for muscle_jax.models: shapes, parameter counts, BatchNorm modes, jit pattern.

Initialising a model for real costs up to a second of RNG compilation per
kernel shape on CPU, so models are built abstractly (`nnx.eval_shape`) and
filled with NumPy values wherever a test needs numbers; the real initialisers
run in the initialisation test only.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from muscle_jax import models

# name -> (model kwargs, natural input shape [batch, h, w, c]).
NATURAL_INPUTS = {
    "wrn28_2": ({}, (2, 32, 32, 3)),
    "cnn13": ({}, (2, 32, 32, 3)),
    "resnet18": ({}, (1, 84, 84, 3)),
    "small_cnn": ({"in_channels": 1}, (2, 8, 8, 1)),
    "mlp": ({"input_shape": (8, 8, 1)}, (2, 8, 8, 1)),
}
BATCH_NORM_MODELS = ("wrn28_2", "cnn13", "resnet18", "small_cnn")
NUM_CLASSES = 10


def _abstract(name, **kwargs):
    kwargs.setdefault("num_classes", NUM_CLASSES)
    return nnx.eval_shape(lambda: models.create_model(name, rngs=nnx.Rngs(0), **kwargs))


def _variable_name(path):
    return [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)][-1]


def _numpy_filled(abstract_model, seed=0):
    """The abstract model with He-scaled NumPy kernels and identity BatchNorm."""
    graphdef, abstract_state = nnx.split(abstract_model)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = _variable_name(path)
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            value = rng.normal(0.0, math.sqrt(2.0 / fan_in), leaf.shape)
        elif name in ("scale", "var"):
            value = np.ones(leaf.shape)
        else:
            value = np.zeros(leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, abstract_state))


def _build(name, **kwargs):
    return _numpy_filled(_abstract(name, **kwargs))


def _images(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _jit_forward(model, *, train):
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, images):
        model = nnx.merge(graphdef, state)
        return model(images, train=train), nnx.state(model)

    return forward, state


def _param_count(model):
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_list_models_names_every_model():
    assert set(models.list_models()) == {
        "wide_resnet",
        "wrn28_2",
        "wrn28_8",
        "resnet18",
        "cnn13",
        "small_cnn",
        "mlp",
    }


@pytest.mark.parametrize("name", sorted(NATURAL_INPUTS))
def test_forward_shapes_at_natural_input_size(name):
    kwargs, shape = NATURAL_INPUTS[name]
    forward, state = _jit_forward(_build(name, **kwargs), train=False)
    out, _ = forward(state, _images(shape))
    assert isinstance(out, models.ModelOutput)
    assert out.logits.shape == (shape[0], NUM_CLASSES)
    assert out.logits.dtype == jnp.float32
    assert out.overclustering_logits is None
    assert np.all(np.isfinite(out.logits))


@pytest.mark.parametrize("shape", [(2, 28, 28, 1), (2, 32, 32, 3)])
def test_small_cnn_takes_mnist_and_cifar_sizes(shape):
    model = _build("small_cnn", in_channels=shape[-1])
    assert model(_images(shape), train=False).logits.shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(
    ("name", "num_classes", "exact", "anchor"),
    [
        # Anchors from docs/method.md; the exact figures equal the PyTorch ports'.
        ("wrn28_2", 10, 1_467_610, 1.47e6),
        ("wrn28_8", 100, 23_401_012, 23.4e6),
    ],
)
def test_wide_resnet_parameter_counts(name, num_classes, exact, anchor):
    count = _param_count(_abstract(name, num_classes=num_classes))
    assert count == exact
    assert abs(count - anchor) / anchor < 0.01


def test_generic_wide_resnet_equals_alias():
    generic = _abstract("wide_resnet", depth=28, width=2)
    assert _param_count(generic) == _param_count(_abstract("wrn28_2"))


def test_resnet18_imagenet_stem_matches_torchvision_count():
    # torchvision.models.resnet18() has 11,689,512 parameters.
    model = _abstract("resnet18", num_classes=1000, stem="imagenet")
    assert _param_count(model) == 11_689_512


@pytest.mark.parametrize("name", BATCH_NORM_MODELS)
def test_batch_stats_update_only_in_training(name):
    kwargs, shape = NATURAL_INPUTS[name]
    model = _build(name, **kwargs)
    images = _images((4, 16, 16, shape[-1])) * 3.0 + 1.0
    before = nnx.state(model, nnx.BatchStat)
    assert jax.tree.leaves(before)

    eval_forward, state = _jit_forward(model, train=False)
    _, after_eval = eval_forward(state, images)
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(after_eval, nnx.BatchStat))

    train_forward, state = _jit_forward(model, train=True)
    _, after_train = train_forward(state, images)
    changed = jax.tree.map(
        lambda a, b: not np.array_equal(a, b), before, nnx.state(after_train, nnx.BatchStat)
    )
    assert all(jax.tree.leaves(changed))


def test_training_mode_normalises_with_batch_statistics():
    model = _build("small_cnn", in_channels=1)
    images = _images((4, 8, 8, 1)) * 5.0 + 2.0
    eval_logits = model(images, train=False).logits
    np.testing.assert_array_equal(model(images, train=False).logits, eval_logits)
    # Running averages start at mean 0 / var 1, far from these inputs' statistics.
    assert not np.allclose(model(images, train=True).logits, eval_logits)


def test_mlp_has_no_batch_norm():
    assert not jax.tree.leaves(nnx.state(_build("mlp", input_shape=(8, 8, 1)), nnx.BatchStat))


@pytest.mark.parametrize("name", models.list_models())
def test_state_is_params_and_batch_stats_only(name):
    # The trainer splits into exactly these two collections; an RNG or other
    # variable hidden in a model would break that split.
    kwargs = NATURAL_INPUTS.get(name, ({}, None))[0]
    _, params, batch_stats = nnx.split(_abstract(name, **kwargs), nnx.Param, nnx.BatchStat)
    assert jax.tree.leaves(params)
    assert name == "mlp" or jax.tree.leaves(batch_stats)


@pytest.mark.parametrize("name", models.list_models())
def test_weight_decay_can_select_kernels_by_name(name):
    kwargs = NATURAL_INPUTS.get(name, ({}, None))[0]
    params = nnx.state(_abstract(name, **kwargs), nnx.Param)

    def check(path, leaf):
        is_kernel = _variable_name(path) == "kernel"
        assert is_kernel == (leaf.ndim >= 2), (jax.tree_util.keystr(path), leaf.shape)

    jax.tree_util.tree_map_with_path(check, params)


@pytest.mark.parametrize("name", models.list_models())
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_overclustering_head_shapes_and_float32_outputs(name, dtype):
    kwargs, shape = NATURAL_INPUTS.get(name, ({}, (2, 32, 32, 3)))
    model = _abstract(name, overclustering_heads=3, overclustering_factor=5, dtype=dtype, **kwargs)
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(
        lambda state, x: nnx.merge(graphdef, state)(x, train=True),
        state,
        jax.ShapeDtypeStruct(shape, jnp.float32),
    )
    assert out.logits.shape == (shape[0], NUM_CLASSES)
    assert out.overclustering_logits.shape == (3, shape[0], 5 * NUM_CLASSES)
    assert out.logits.dtype == jnp.float32
    assert out.overclustering_logits.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(state)} == {jnp.dtype(jnp.float32)}


def test_overclustering_heads_are_independent():
    model = _build("small_cnn", in_channels=1, overclustering_heads=2, overclustering_factor=3)
    out = model(_images((2, 8, 8, 1)), train=False)
    assert out.overclustering_logits.shape == (2, 2, 3 * NUM_CLASSES)
    assert not np.allclose(out.overclustering_logits[0], out.overclustering_logits[1])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_split_merge_jit_step_traces_once(dtype):
    model = _build("small_cnn", in_channels=1, overclustering_heads=1, dtype=dtype)
    graphdef, state = nnx.split(model)
    traces = []

    @jax.jit
    def step(state, images):
        traces.append(None)
        model = nnx.merge(graphdef, state)
        out = model(images, train=True)
        return out.logits, nnx.state(model)

    logits, new_state = step(state, _images((4, 8, 8, 1), seed=1))
    # The returned state must have the input's structure and dtypes, or the
    # next step would retrace.
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert [a.dtype for a in jax.tree.leaves(new_state)] == [
        a.dtype for a in jax.tree.leaves(state)
    ]
    logits_again, _ = step(new_state, _images((4, 8, 8, 1), seed=2))
    assert len(traces) == 1
    assert logits.dtype == logits_again.dtype == jnp.float32
    assert np.all(np.isfinite(logits_again))


def test_bfloat16_compute_stays_close_to_float32():
    images = _images((4, 8, 8, 1))
    full = _build("small_cnn", in_channels=1)(images, train=False).logits
    half = _build("small_cnn", in_channels=1, dtype=jnp.bfloat16)(images, train=False).logits
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(half, full, atol=0.1, rtol=0.1)


def test_initialisation_follows_fixmatch():
    model = models.create_model(
        "small_cnn", num_classes=NUM_CLASSES, in_channels=16, widths=(64,), rngs=nnx.Rngs(0)
    )
    kernel = np.asarray(model.backbone.convs[0].kernel[...])
    # He-normal over fan-out: std = sqrt(2 / (3 * 3 * 64)).
    np.testing.assert_allclose(kernel.std(), math.sqrt(2.0 / (9 * 64)), rtol=0.05)
    np.testing.assert_array_equal(model.heads.classifier.bias[...], 0.0)


def test_dropout_needs_a_key_and_is_deterministic_given_one():
    model = _build("mlp", input_shape=(8, 8, 1), dropout_rate=0.5)
    images = _images((2, 8, 8, 1))
    with pytest.raises(ValueError, match="dropout_key"):
        model(images, train=True)
    key = jax.random.key(3)
    first = model(images, train=True, dropout_key=key).logits
    np.testing.assert_array_equal(model(images, train=True, dropout_key=key).logits, first)
    other = model(images, train=True, dropout_key=jax.random.key(4)).logits
    assert not np.allclose(other, first)
    np.testing.assert_array_equal(
        model(images, train=False).logits, model(images, train=False, dropout_key=key).logits
    )


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ValueError, match="Unknown model 'vgg16'") as error:
        models.create_model("vgg16", num_classes=10, rngs=nnx.Rngs(0))
    for name in models.list_models():
        assert name in str(error.value)


def test_alias_rejects_contradicting_kwargs():
    with pytest.raises(ValueError, match="wrn28_2"):
        _abstract("wrn28_2", width=8)


def test_wide_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        _abstract("wide_resnet", depth=27)


def test_mlp_rejects_images_of_another_shape():
    model = _build("mlp", input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="shape"):
        model(_images((2, 28, 28, 1)), train=False)


def test_resnet_rejects_unknown_stem():
    with pytest.raises(ValueError, match="stem"):
        _abstract("resnet18", stem="vit")


# ---------------------------------------------------------------- one contract


@pytest.mark.parametrize("name", models.list_models())
def test_every_built_in_backbone_returns_the_features_it_declares(name):
    kwargs, shape = NATURAL_INPUTS.get(name, ({}, (2, 32, 32, 3)))
    backbone = nnx.eval_shape(lambda: models.create_backbone(name, rngs=nnx.Rngs(0), **kwargs))
    assert not hasattr(backbone, "heads")  # The heads are the classifier's, not the backbone's.
    graphdef, state = nnx.split(backbone)
    features = jax.eval_shape(
        lambda state, x: nnx.merge(graphdef, state)(x, train=False),
        state,
        jax.ShapeDtypeStruct(shape, jnp.float32),
    )
    assert features.shape == (shape[0], backbone.num_features)
    # Every model: the backbone's variables under backbone/, the heads' under heads/.
    model = _abstract(name, **kwargs)
    assert isinstance(model, models.Classifier) and isinstance(model.heads, models.OutputHeads)
    assert sorted(nnx.state(model, nnx.Param).to_pure_dict()) == ["backbone", "heads"]


# A backbone of yours that is the built-in small CNN, by import path.
SMALL_CNN_BY_PATH = """
from muscle_jax.models import SmallCNN as Mine
"""


def test_a_built_in_and_a_user_backbone_go_through_the_same_classifier(tmp_path, monkeypatch):
    (tmp_path / "mine_by_path.py").write_text(SMALL_CNN_BY_PATH)
    monkeypatch.syspath_prepend(str(tmp_path))
    heads = dict(
        overclustering_heads=2, projector_dim=6, balanced_head=True, mi_head=True, in_channels=1
    )

    def build(name):
        model = models.create_model(
            name, num_classes=NUM_CLASSES, widths=(4, 8), rngs=nnx.Rngs(3), **heads
        )
        return nnx.split(model)

    images = _images((3, 8, 8, 1))
    built = {}
    for name in ("small_cnn", "mine_by_path:Mine"):
        graphdef, state = jax.jit(lambda name=name: build(name))()
        model = nnx.merge(graphdef, state)
        assert isinstance(model, models.Classifier) and model.num_features == 8
        built[name] = (state, model(images, train=True), model(images, train=False))
    (state, *outputs), (user_state, *user_outputs) = built.values()
    # One classifier: the same variables at the same paths, initialised alike, and
    # the same outputs from every head, in training and evaluation.
    assert jax.tree.structure(state) == jax.tree.structure(user_state)
    jax.tree.map(np.testing.assert_array_equal, state, user_state)
    for output, user_output in zip(outputs, user_outputs, strict=True):
        assert None not in output
        jax.tree.map(np.testing.assert_array_equal, output, user_output)
