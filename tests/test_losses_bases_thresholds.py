"""Adaptive thresholds of FlexMatch, FreeMatch and Dash: masks, their state and extra terms.

Expected values are worked out by hand in the comments (or with NumPy),
never by calling the function under test. conftest.py gives the process 8
simulated CPU devices for the sharded == single-device checks. The property
tests draw values for a few fixed shapes: each example runs one
module-level jitted function, compiled once per shape.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import PartitionSpec as P

from muscle_jax.losses._adaptive_thresholds import (
    dash_initial_threshold,
    dash_mask,
    dash_targets,
    dash_threshold,
    flexmatch_class_effect,
    flexmatch_init,
    flexmatch_mask,
    flexmatch_thresholds,
    flexmatch_update,
    freematch_fairness_loss,
    freematch_init,
    freematch_mask,
    freematch_thresholds,
    freematch_update,
)
from tests.meshes import NUM_DEVICES, shard

PROFILE = settings(max_examples=20, deadline=None)


# Uneven per-device counts, so a per-device statistic would differ from the global one.
WHERE = jnp.arange(32) % 5 != 0


def assert_state_close(actual, expected, rtol=1e-6, atol=1e-7):
    assert set(actual) == set(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=atol)


# ---------------------------------------------------------------- FlexMatch

# 3 classes, 4 images: confidences [0.90, 0.96, 0.36, 0.70], pseudo-labels [0, 0, 1, 2].
FLEX_PROBS = jnp.array(
    [[0.90, 0.05, 0.05], [0.96, 0.02, 0.02], [0.34, 0.36, 0.30], [0.10, 0.20, 0.70]]
)


def test_flexmatch_class_effect_hand_computed():
    # N = 8: five unused, sigma = [2, 1, 0].
    selected = jnp.array([-1, -1, -1, -1, -1, 0, 0, 1])
    warm = flexmatch_class_effect(selected, 3)
    assert warm.dtype == jnp.float32
    # Warm-up: / max(max sigma, unused) = / max(2, 5) = / 5.
    np.testing.assert_allclose(warm, [0.4, 0.2, 0.0], rtol=1e-6)
    # Without: / max sigma = / 2.
    np.testing.assert_allclose(
        flexmatch_class_effect(selected, 3, warmup=False), [1.0, 0.5, 0.0], rtol=1e-6
    )
    # Once the selected outnumber the unused, the warm-up no longer matters:
    # sigma = [3, 2, 1], unused 2 -> / 3 either way.
    selected = jnp.array([-1, -1, 0, 0, 0, 1, 1, 2])
    for warmup in (True, False):
        np.testing.assert_allclose(
            flexmatch_class_effect(selected, 3, warmup=warmup), [1.0, 2 / 3, 1 / 3], rtol=1e-6
        )


def test_flexmatch_thresholds_mappings_hand_computed():
    beta = jnp.array([1.0, 0.5, 0.0])
    # Convex M(x) = x / (2 - x): [1/1, 0.5/1.5, 0] = [1, 1/3, 0].
    np.testing.assert_allclose(flexmatch_thresholds(beta), [0.95, 0.95 / 3, 0.0], rtol=1e-6)
    # Linear M(x) = x.
    np.testing.assert_allclose(
        flexmatch_thresholds(beta, mapping="linear"), [0.95, 0.475, 0.0], rtol=1e-6
    )


def test_flexmatch_mask_hand_computed():
    beta = jnp.array([1.0, 0.5, 0.0])
    # Convex thresholds [0.95, 0.3167, 0]: 0.90 < 0.95, 0.96 >= 0.95,
    # 0.36 >= 0.3167, 0.70 >= 0.
    mask = flexmatch_mask(FLEX_PROBS, beta)
    assert mask.dtype == jnp.float32
    np.testing.assert_array_equal(mask, [0, 1, 1, 1])
    # Linear thresholds [0.95, 0.475, 0]: image 2 (0.36, class 1) now fails.
    np.testing.assert_array_equal(flexmatch_mask(FLEX_PROBS, beta, mapping="linear"), [0, 1, 0, 1])


def test_flexmatch_warmup_lets_every_image_pass():
    # At the start every entry is -1: beta = 0 (0/N with the warm-up, 0/0 -> 0
    # without), M(0) = 0, so the threshold is 0 and nothing is rejected.
    selected = flexmatch_init(10)
    np.testing.assert_array_equal(selected, np.full(10, -1))
    assert selected.dtype == jnp.int32
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (16, 5)))
    for warmup in (True, False):
        beta = flexmatch_class_effect(selected, 5, warmup=warmup)
        np.testing.assert_array_equal(beta, np.zeros(5))
        for mapping in ("convex", "linear"):
            np.testing.assert_array_equal(flexmatch_mask(probs, beta, mapping=mapping), np.ones(16))


def test_flexmatch_update_selects_with_the_fixed_tau():
    selected = flexmatch_init(6)
    beta = flexmatch_class_effect(selected, 3)
    # The flexible threshold is 0 in the warm-up: the mask keeps all four ...
    np.testing.assert_array_equal(flexmatch_mask(FLEX_PROBS, beta), np.ones(4))
    # ... but only image 1 (0.96 >= tau = 0.95, class 0) is recorded, at its id 1.
    ids = jnp.array([4, 1, 2, 0])
    np.testing.assert_array_equal(
        flexmatch_update(selected, ids, FLEX_PROBS), [-1, 0, -1, -1, -1, -1]
    )
    # tau = 0.5: images 0 (0.90, class 0 -> id 4), 1 (-> id 1) and 3 (0.70, class 2 -> id 0).
    np.testing.assert_array_equal(
        flexmatch_update(selected, ids, FLEX_PROBS, threshold=0.5), [2, 0, -1, -1, 0, -1]
    )
    # Images below tau keep the entry they had (id 4 stays 1).
    updated = flexmatch_update(jnp.ones(6, jnp.int32), ids, FLEX_PROBS)
    assert updated.dtype == jnp.int32
    np.testing.assert_array_equal(updated, [1, 0, 1, 1, 1, 1])


def test_flexmatch_update_duplicates_padding_and_out_of_range_ids():
    confident = jnp.eye(3)[jnp.array([0, 2, 1, 1, 1])]  # confidence 1, classes [0, 2, 1, 1, 1]
    ids = jnp.array([3, 3, 5, -1, 7])
    where = jnp.array([True, True, False, True, True])
    updated = flexmatch_update(flexmatch_init(6), ids, confident, where=where)
    # Id 3 twice: the later image (class 2) wins. Id 5 is padding: not written.
    # Ids -1 and 7 are out of range and dropped; -1 does not wrap around to id 5.
    np.testing.assert_array_equal(updated, [-1, -1, -1, 2, -1, -1])


def test_flexmatch_jit_equals_eager_and_stop_gradient():
    logits = 4 * jax.random.normal(jax.random.key(1), (12, 4))
    probs = jax.nn.softmax(logits)
    ids = jax.random.randint(jax.random.key(2), (12,), 0, 20)
    selected = jax.random.randint(jax.random.key(3), (20,), -1, 4)
    class_effect = jax.jit(flexmatch_class_effect, static_argnums=1, static_argnames="warmup")
    for warmup in (True, False):
        np.testing.assert_array_equal(
            class_effect(selected, 4, warmup=warmup),
            flexmatch_class_effect(selected, 4, warmup=warmup),
        )
    beta = flexmatch_class_effect(selected, 4)
    mask = jax.jit(flexmatch_mask, static_argnames="mapping")
    np.testing.assert_array_equal(
        mask(probs, beta, threshold=0.6), flexmatch_mask(probs, beta, threshold=0.6)
    )
    np.testing.assert_array_equal(
        jax.jit(flexmatch_update)(selected, ids, probs, threshold=0.6),
        flexmatch_update(selected, ids, probs, threshold=0.6),
    )
    grads = jax.grad(lambda p, b: jnp.sum(flexmatch_mask(p, b, threshold=0.3) * p[:, 0]), (0, 1))(
        probs, beta
    )
    # Only the product's own factor: nothing through the mask or beta.
    expected = np.zeros((12, 4))
    expected[:, 0] = flexmatch_mask(probs, beta, threshold=0.3)
    np.testing.assert_array_equal(grads[0], expected)
    np.testing.assert_array_equal(grads[1], np.zeros(4))


def test_flexmatch_errors():
    probs = jnp.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        flexmatch_mask(probs, jnp.zeros(2))
    with pytest.raises(ValueError, match="Unknown mapping 'concave'"):
        flexmatch_mask(probs, jnp.zeros(3), mapping="concave")
    with pytest.raises(ValueError, match="threshold must be in"):
        flexmatch_mask(probs, jnp.zeros(3), threshold=1.5)
    with pytest.raises(ValueError, match="rank 2"):
        flexmatch_mask(probs[0], jnp.zeros(3))
    with pytest.raises(ValueError, match="ids must be integers"):
        flexmatch_update(flexmatch_init(8), jnp.zeros(4), probs)
    with pytest.raises(ValueError, match="Batch sizes"):
        flexmatch_update(flexmatch_init(8), jnp.arange(3), probs)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        flexmatch_update(flexmatch_init(8), jnp.arange(4), probs, where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="rank 1"):
        flexmatch_update(jnp.zeros((8, 1), jnp.int32), jnp.arange(4), probs)
    with pytest.raises(ValueError, match="num_classes"):
        flexmatch_class_effect(flexmatch_init(8), 0)
    with pytest.raises(ValueError, match="num_unlabeled"):
        flexmatch_init(0)


def flexmatch_inputs():
    probs = jax.nn.softmax(3 * jax.random.normal(jax.random.key(4), (32, 5)))
    # Duplicated ids across devices (rows 3 and 27, rows 10 and 11), so that
    # the order of the global batch decides.
    ids = jax.random.permutation(jax.random.key(5), 48)[:32]
    ids = ids.at[27].set(ids[3]).at[11].set(ids[10])
    selected = jax.random.randint(jax.random.key(6), (48,), -1, 5)
    return selected, ids, probs


def test_flexmatch_update_axis_name_equals_single_device(mesh):
    selected, ids, probs = flexmatch_inputs()
    single = flexmatch_update(selected, ids, probs, threshold=0.6, where=WHERE)
    assert int(jnp.sum(single != selected)) > 5  # the check below has something to compare
    mapped = jax.jit(
        jax.shard_map(
            lambda s, i, p, w: flexmatch_update(s, i, p, threshold=0.6, where=w, axis_name="data"),
            mesh=mesh,
            in_specs=(P(), P("data"), P("data"), P("data")),
            out_specs=P(),
        )
    )
    sharded = mapped(selected, *shard((ids, probs, WHERE), mesh))
    np.testing.assert_array_equal(sharded, single)


def test_flexmatch_update_global_view_jit_equals_single_device(global_mesh):
    selected, ids, probs = flexmatch_inputs()
    single = flexmatch_update(selected, ids, probs, threshold=0.6, where=WHERE)
    update = jax.jit(functools.partial(flexmatch_update, threshold=0.6))
    np.testing.assert_array_equal(
        update(selected, *shard((ids, probs), global_mesh), where=shard(WHERE, global_mesh)),
        single,
    )


@functools.partial(jax.jit, static_argnames=("num_classes", "warmup"))
def _flexmatch_run(selected, ids, logits, num_classes, warmup):
    def step(selected, batch):
        ids, logits = batch
        probs = jax.nn.softmax(logits)
        beta = flexmatch_class_effect(selected, num_classes, warmup=warmup)
        mask = flexmatch_mask(probs, beta)
        return flexmatch_update(selected, ids, probs), (beta, mask)

    return jax.lax.scan(step, selected, (ids, logits))


@PROFILE
@given(
    # (unlabeled set, batch, classes)
    shape=st.sampled_from([(1, 1, 2), (20, 7, 10), (300, 33, 57), (1000, 64, 100)]),
    scale=st.sampled_from([0.1, 5.0, 50.0]),
    warmup=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_flexmatch_class_effect_stays_in_unit_interval(shape, scale, warmup, seed):
    num_unlabeled, batch, num_classes = shape
    keys = jax.random.split(jax.random.key(seed), 3)
    selected = jax.random.randint(keys[0], (num_unlabeled,), -1, num_classes)
    ids = jax.random.randint(keys[1], (4, batch), 0, num_unlabeled)
    logits = scale * jax.random.normal(keys[2], (4, batch, num_classes))
    final, (betas, masks) = _flexmatch_run(selected, ids, logits, num_classes, warmup)
    betas = np.asarray(betas)
    assert np.all(betas >= 0.0) and np.all(betas <= 1.0)
    assert set(np.unique(np.asarray(masks))) <= {0.0, 1.0}
    assert np.all(np.asarray(final) >= -1) and np.all(np.asarray(final) < num_classes)


# ---------------------------------------------------------------- FreeMatch

# 3 classes, 4 images: confidences [0.6, 0.7, 0.4, 0.8] (mean 0.625),
# pseudo-labels [0, 1, 0, 2], mean p = [1.3, 1.45, 1.25] / 4 = [0.325, 0.3625, 0.3125].
FREE_PROBS = jnp.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])


def test_freematch_init_follows_torchssl_by_default():
    state = freematch_init(4)
    assert set(state) == {"tau", "p_tilde", "hist"}
    np.testing.assert_allclose(state["tau"], 0.25)
    np.testing.assert_allclose(state["p_tilde"], np.full(4, 0.25))
    np.testing.assert_allclose(state["hist"], np.full(4, 0.25))
    # USB 0.3.2 starts at 1/C too; its 0.3.0 release started all three at 1.
    usb_0_3_0 = freematch_init(4, initial=1.0)
    np.testing.assert_array_equal(usb_0_3_0["tau"], 1.0)
    np.testing.assert_array_equal(usb_0_3_0["hist"], np.ones(4))
    with pytest.raises(ValueError, match="num_classes"):
        freematch_init(0)
    with pytest.raises(ValueError, match="initial"):
        freematch_init(3, initial=0.0)


def test_freematch_update_and_mask_hand_computed():
    # m = 0.5 from the uniform start 1/3 = 160/480:
    #   tau     = 160/480 / 2 + 0.625 / 2 = 80/480 + 150/480 = 230/480
    #   p_tilde = 80/480 + [0.325, 0.3625, 0.3125] / 2 = [158, 167, 155] / 480
    #   hist    = 1/6 + [2, 1, 1] / 4 / 2 = [5/12, 7/24, 7/24]
    state = freematch_update(freematch_init(3), FREE_PROBS, momentum=0.5)
    expected = {
        "tau": 230 / 480,
        "p_tilde": np.array([158, 167, 155]) / 480,
        "hist": np.array([5 / 12, 7 / 24, 7 / 24]),
    }
    assert_state_close(state, expected)
    # Class thresholds tau * p_tilde / max p_tilde = 230/480 * [158, 167, 155] / 167
    # = [0.453343, 0.479167, 0.444736].
    np.testing.assert_allclose(
        freematch_thresholds(state), [0.453343, 0.479167, 0.444736], rtol=1e-5
    )
    # 0.6 >= 0.4533, 0.7 >= 0.4792, 0.4 < 0.4533 (class 0), 0.8 >= 0.4447.
    mask = freematch_mask(FREE_PROBS, state)
    assert mask.dtype == jnp.float32
    np.testing.assert_array_equal(mask, [1, 1, 0, 1])


def test_freematch_update_default_momentum_and_where():
    state = freematch_init(3)
    # m = 0.999: tau = 0.999 / 3 + 0.001 * 0.625.
    updated = freematch_update(state, FREE_PROBS)
    assert float(updated["tau"]) == pytest.approx(0.999 / 3 + 0.000625, rel=1e-6)
    # Padding (even non-finite) is left out of every mean.
    padded = jnp.concatenate([FREE_PROBS, jnp.full((2, 3), jnp.nan)])
    where = jnp.array([True] * 4 + [False] * 2)
    assert_state_close(
        freematch_update(state, padded, momentum=0.5, where=where),
        freematch_update(state, FREE_PROBS, momentum=0.5),
    )
    # No image selected: unchanged.
    assert_state_close(
        freematch_update(state, FREE_PROBS, momentum=0.5, where=jnp.zeros(4, bool)), state
    )


def test_freematch_update_under_jit_and_stop_gradient():
    probs = jax.nn.softmax(2 * jax.random.normal(jax.random.key(7), (10, 4)))
    state = freematch_update(freematch_init(4), probs, momentum=0.9)
    assert_state_close(jax.jit(freematch_update)(freematch_init(4), probs, momentum=0.9), state)
    np.testing.assert_array_equal(
        jax.jit(freematch_mask)(probs, state), freematch_mask(probs, state)
    )

    def total(probs, state):
        new = freematch_update(state, probs)
        return new["tau"] + jnp.sum(new["p_tilde"]) + jnp.sum(freematch_thresholds(new))

    grad_probs, grad_state = jax.grad(total, argnums=(0, 1))(probs, state)
    np.testing.assert_array_equal(grad_probs, np.zeros((10, 4)))
    for value in grad_state.values():
        np.testing.assert_array_equal(value, np.zeros(jnp.shape(value)))


# Five strongly augmented images, the last one not kept by the mask.
# softmax(log Q) = Q; kept rows: argmax q = [0, 0, 2, 1] -> histogram [2, 1, 1],
# mean q = ([0.5, 0.3, 0.2] + [0.7, 0.2, 0.1] + [0.2, 0.2, 0.6] + [0.1, 0.8, 0.1]) / 4
#        = [1.5, 1.5, 1.0] / 4 = [3, 6, 4] / 16 after division by the histogram's [2, 1, 1]
#        (3/16 = 0.375/2, 6/16 = 0.375, 4/16 = 0.25), so b = [3, 6, 4] / 13.
FAIR_Q = np.array(
    [[0.5, 0.3, 0.2], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05]]
)
FAIR_MASK = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0])


def fair_state(p_tilde, hist):
    return {"tau": jnp.array(0.5), "p_tilde": jnp.array(p_tilde), "hist": jnp.array(hist)}


def test_freematch_fairness_hand_computed():
    strong = jnp.log(jnp.asarray(FAIR_Q, jnp.float32))
    # p_tilde / hist = [1, 1, 1]: a = [1/3, 1/3, 1/3].
    # L = (log 3/13 + log 6/13 + log 4/13) / 3 = (log 72 - 3 log 13) / 3 = -1.139394
    uniform = fair_state([0.5, 0.25, 0.25], [0.5, 0.25, 0.25])
    loss = freematch_fairness_loss(strong, FAIR_MASK, uniform)
    assert loss.dtype == jnp.float32
    assert float(loss) == pytest.approx(-1.139394, rel=1e-5)
    # p_tilde / hist = [0.5/0.25, 0.25/0.25, 0.25/0.5] = [2, 1, 0.5]: a = [4, 2, 1] / 7.
    # L = (4 log 3/13 + 2 log 6/13 + log 4/13) / 7 = -1.227198
    skewed = fair_state([0.5, 0.25, 0.25], [0.25, 0.25, 0.5])
    assert float(freematch_fairness_loss(strong, FAIR_MASK, skewed)) == pytest.approx(
        -1.227198, rel=1e-5
    )
    # A class no kept image predicts gets b = 0, i.e. log(1e-12): keep images 0 and 1
    # only (both class 0): b = [1, 0, 0], L = 0 + (2/7 + 1/7) log(1e-12) = -11.841866.
    two = jnp.array([1.0, 1.0, 0.0, 0.0, 0.0])
    assert float(freematch_fairness_loss(strong, two, skewed)) == pytest.approx(
        3 / 7 * math.log(1e-12), rel=1e-5
    )


def fairness_reference(logits, mask, p_tilde, hist):
    """L_f in float64 NumPy, for the finite differences."""
    logits = np.asarray(logits, np.float64)
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    kept = np.asarray(mask) > 0
    counts = np.bincount(q[kept].argmax(-1), minlength=q.shape[1])
    ratio = np.divide(q[kept].mean(0), counts, out=np.zeros(q.shape[1]), where=counts > 0)
    b = ratio / ratio.sum()
    a = np.asarray(p_tilde) / np.asarray(hist)
    a /= a.sum()
    return float(np.sum(a * np.log(b + 1e-12)))


def test_freematch_fairness_gradient_finite_non_zero_and_only_through_kept_rows():
    logits = 2 * jax.random.normal(jax.random.key(8), (8, 4))
    mask = jnp.array([1, 1, 0, 1, 1, 0, 1, 1], jnp.float32)
    state = fair_state([0.3, 0.2, 0.25, 0.25], [0.25, 0.3, 0.2, 0.25])
    value, (grad, grad_mask, grad_state) = jax.value_and_grad(
        freematch_fairness_loss, argnums=(0, 1, 2)
    )(logits, mask, state)
    assert float(value) == pytest.approx(fairness_reference(logits, mask, **_vectors(state)), 1e-5)
    assert np.all(np.isfinite(grad))
    assert float(jnp.abs(grad).sum()) > 1e-3
    np.testing.assert_array_equal(grad[np.asarray(mask) == 0], np.zeros((2, 4)))
    np.testing.assert_array_equal(grad_mask, np.zeros(8))
    for key in grad_state:
        np.testing.assert_array_equal(grad_state[key], np.zeros(jnp.shape(grad_state[key])))
    # Central differences of the NumPy reference (no argmax is near a tie here).
    eps = 1e-4
    numeric = np.zeros((8, 4))
    for i in range(8):
        for k in range(4):
            step = np.zeros((8, 4))
            step[i, k] = eps
            numeric[i, k] = (
                fairness_reference(np.asarray(logits) + step, mask, **_vectors(state))
                - fairness_reference(np.asarray(logits) - step, mask, **_vectors(state))
            ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=1e-5)
    # Under jit, the same value and gradient.
    jitted_value, jitted_grad = jax.jit(jax.value_and_grad(freematch_fairness_loss))(
        logits, mask, state
    )
    assert float(jitted_value) == pytest.approx(float(value), rel=1e-6)
    np.testing.assert_allclose(jitted_grad, grad, rtol=1e-5, atol=1e-8)


def _vectors(state):
    return {"p_tilde": np.asarray(state["p_tilde"]), "hist": np.asarray(state["hist"])}


def test_freematch_fairness_is_zero_when_nothing_is_kept_and_negative_otherwise():
    logits = 3 * jax.random.normal(jax.random.key(9), (6, 5))
    state = freematch_update(freematch_init(5), jax.nn.softmax(logits), momentum=0.9)
    value, grad = jax.value_and_grad(freematch_fairness_loss)(logits, jnp.zeros(6), state)
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros((6, 5)))
    for keep in ([1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 1], [1] * 6):
        assert float(freematch_fairness_loss(logits, jnp.array(keep, jnp.float32), state)) < 0.0


def test_freematch_fairness_where_masks_non_finite_padding():
    strong = jnp.log(jnp.asarray(FAIR_Q, jnp.float32))
    state = fair_state([0.5, 0.25, 0.25], [0.25, 0.25, 0.5])
    padded = jnp.concatenate([strong, jnp.full((3, 3), jnp.nan)])
    padded_mask = jnp.concatenate([FAIR_MASK, jnp.ones(3)])
    where = jnp.array([True] * 5 + [False] * 3)
    value_and_grad = jax.jit(jax.value_and_grad(freematch_fairness_loss))
    reference, reference_grad = value_and_grad(strong, FAIR_MASK, state)
    masked, grad = value_and_grad(padded, padded_mask, state, where=where)
    assert float(masked) == pytest.approx(float(reference), rel=1e-6)
    np.testing.assert_allclose(grad[:5], reference_grad, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(grad[5:], np.zeros((3, 3)))


def test_freematch_errors():
    probs = jnp.full((4, 3), 1 / 3)
    state = freematch_init(3)
    with pytest.raises(ValueError, match=r"\(3,\) to match probs \(4, 3\), got \(2,\)"):
        freematch_mask(probs, freematch_init(2))
    with pytest.raises(ValueError, match="keys hist, p_tilde, tau"):
        freematch_update({"tau": 0.5}, probs)
    with pytest.raises(ValueError, match="scalar"):
        freematch_update({**state, "tau": jnp.ones(3)}, probs)
    with pytest.raises(ValueError, match="momentum"):
        freematch_update(state, probs, momentum=1.5)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        freematch_update(state, probs, where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match=r"mask must have shape \(4,\)"):
        freematch_fairness_loss(probs, jnp.ones(3), state)
    with pytest.raises(ValueError, match="rank 2"):
        freematch_fairness_loss(probs[0], jnp.ones(4), state)


def freematch_inputs():
    weak = 3 * jax.random.normal(jax.random.key(10), (32, 5))
    strong = weak + 2 * jax.random.normal(jax.random.key(11), (32, 5))
    return jax.nn.softmax(weak), strong


def test_freematch_axis_name_equals_single_device(mesh):
    probs, strong = freematch_inputs()
    state = freematch_init(5)
    single_state = freematch_update(state, probs, momentum=0.1, where=WHERE)
    mask = freematch_mask(probs, single_state)
    assert 0 < float(mask.sum()) < 32

    def fairness(strong, mask, state, where, axis_name=None):
        return freematch_fairness_loss(strong, mask, state, where=where, axis_name=axis_name)

    single, single_grad = jax.jit(jax.value_and_grad(fairness))(strong, mask, single_state, WHERE)

    update = jax.jit(
        jax.shard_map(
            lambda s, p, w: freematch_update(s, p, momentum=0.1, where=w, axis_name="data"),
            mesh=mesh,
            in_specs=(P(), P("data"), P("data")),
            out_specs=P(),
        )
    )
    assert_state_close(update(state, *shard((probs, WHERE), mesh)), single_state)

    mapped = jax.jit(
        jax.shard_map(
            lambda z, m, s, w: fairness(z, m, s, w, axis_name="data"),
            mesh=mesh,
            in_specs=(P("data"), P("data"), P(), P("data")),
            out_specs=P(),
        )
    )
    strong_s, mask_s, where_s = shard((strong, mask, WHERE), mesh)
    sharded, sharded_grad = jax.value_and_grad(mapped)(strong_s, mask_s, single_state, where_s)
    assert float(sharded) == pytest.approx(float(single), rel=1e-5)
    np.testing.assert_allclose(sharded_grad, single_grad, rtol=1e-5, atol=1e-8)
    # Per-device means and histograms would give another value.
    per_device = np.mean(
        [
            fairness(z, m, single_state, w)
            for z, m, w in zip(*(jnp.split(v, NUM_DEVICES) for v in (strong, mask, WHERE)))
        ]
    )
    assert abs(float(per_device) - float(single)) > 1e-3


def test_freematch_global_view_jit_equals_single_device(global_mesh):
    probs, strong = freematch_inputs()
    state = freematch_update(freematch_init(5), probs, momentum=0.1, where=WHERE)
    mask = freematch_mask(probs, state)
    update = jax.jit(functools.partial(freematch_update, momentum=0.1))
    probs_s, where_s = shard((probs, WHERE), global_mesh)
    assert_state_close(update(freematch_init(5), probs_s, where=where_s), state)

    def fairness(strong, mask, where):
        return freematch_fairness_loss(strong, mask, state, where=where)

    single, single_grad = jax.jit(jax.value_and_grad(fairness))(strong, mask, WHERE)
    sharded, grad = jax.jit(jax.value_and_grad(fairness))(
        *shard((strong, mask, WHERE), global_mesh)
    )
    assert float(sharded) == pytest.approx(float(single), rel=1e-5)
    np.testing.assert_allclose(grad, single_grad, rtol=1e-5, atol=1e-8)


@jax.jit
def _freematch_run(weak_logits, strong_logits, momentum):
    def step(state, logits):
        weak, strong = logits
        probs = jax.nn.softmax(weak)
        state = freematch_update(state, probs, momentum=momentum)
        mask = freematch_mask(probs, state)
        fairness = freematch_fairness_loss(strong, mask, state)
        return state, (state["tau"], freematch_thresholds(state), jnp.sum(mask), fairness)

    initial = freematch_init(weak_logits.shape[-1])
    return jax.lax.scan(step, initial, (weak_logits, strong_logits))[1]


@PROFILE
@given(
    shape=st.sampled_from([(1, 2), (7, 10), (33, 57), (256, 100)]),
    scale=st.sampled_from([0.1, 1.0, 5.0, 50.0]),
    momentum=st.sampled_from([0.5, 0.9, 0.999]),
    seed=st.integers(0, 2**16),
)
def test_freematch_threshold_stays_in_unit_interval_and_fairness_is_negative(
    shape, scale, momentum, seed
):
    batch, num_classes = shape
    key_weak, key_strong = jax.random.split(jax.random.key(seed))
    weak = scale * jax.random.normal(key_weak, (6, batch, num_classes))
    strong = scale * jax.random.normal(key_strong, (6, batch, num_classes))
    taus, thresholds, kept, fairness = map(np.asarray, _freematch_run(weak, strong, momentum))
    assert np.all(taus > 0.0) and np.all(taus < 1.0)
    assert np.all(thresholds > 0.0) and np.all(thresholds < 1.0)
    assert np.all(np.isfinite(fairness))
    assert np.all(fairness[kept > 0] < 0.0)
    assert np.all(fairness[kept == 0] == 0.0)


# ---------------------------------------------------------------- Dash


def test_dash_threshold_schedule_hand_computed():
    # rho_init = 2, C0 = 1.0001, gamma = 1.27, every 10240 steps.
    expected = {
        0: 2.0002,
        10239: 2.0002,
        10240: 2.0002 / 1.27,  # 1.574961
        20480: 2.0002 / 1.27**2,  # 1.240126
        15 * 10240: 2.0002 / 36.062499,  # 1.27^15: 0.055465, still above the floor
        16 * 10240: 0.05,  # 2.0002 / 45.799373 = 0.043673 < 0.05: the floor
        10**9: 0.05,
    }
    for step, rho in expected.items():
        value = dash_threshold(step, 2.0)
        assert value.dtype == jnp.float32
        assert float(value) == pytest.approx(rho, rel=1e-5), step
    # Under jit the step is traced: one compilation, same values.
    jitted = jax.jit(dash_threshold)
    for step, rho in expected.items():
        assert float(jitted(jnp.asarray(step, jnp.int32), 2.0)) == pytest.approx(rho, rel=1e-5)
    # A custom interval: halved every 3 steps.
    assert float(dash_threshold(7, 1.0, c0=1.0, gamma=2.0, steps_per_decay=3)) == 0.25
    # A start below the floor is lifted to it.
    assert float(dash_threshold(0, 0.01)) == pytest.approx(0.05)


# Weak logits: z0 = [log 4, log 2, 0] -> softmax [4, 2, 1] / 7; with T = 1/2 the
# logits double, [log 16, log 4, 0] -> [16, 4, 1] / 21. z1 uniform, z2 confident.
DASH_LOGITS = jnp.array([[math.log(4), math.log(2), 0.0], [0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])


def test_dash_targets_switch_from_soft_to_hard_at_rho_min():
    soft = dash_targets(DASH_LOGITS, 0.8)
    assert soft.dtype == jnp.float32
    np.testing.assert_allclose(soft[0], np.array([16, 4, 1]) / 21, rtol=1e-6)
    np.testing.assert_allclose(soft[1], np.full(3, 1 / 3), rtol=1e-6)
    hard = np.eye(3)[[0, 0, 0]]  # ties go to the lower index
    np.testing.assert_array_equal(dash_targets(DASH_LOGITS, 0.05), hard)
    np.testing.assert_array_equal(dash_targets(DASH_LOGITS, 0.01), hard)
    np.testing.assert_allclose(dash_targets(DASH_LOGITS, 0.0500001), soft, rtol=1e-6)
    # Along the schedule: soft while rho_t > rho_min, hard once it is clipped to it.
    assert float(jnp.max(dash_targets(DASH_LOGITS[:1], dash_threshold(15 * 10240, 2.0)))) < 1
    np.testing.assert_array_equal(dash_targets(DASH_LOGITS, dash_threshold(16 * 10240, 2.0)), hard)
    # rho traced under jit selects the same targets.
    targets = jax.jit(dash_targets)
    np.testing.assert_allclose(targets(DASH_LOGITS, jnp.float32(0.8)), soft, rtol=1e-6)
    np.testing.assert_array_equal(targets(DASH_LOGITS, jnp.float32(0.05)), hard)
    # Custom temperature and floor: T = 1 gives the plain softmax.
    np.testing.assert_allclose(
        dash_targets(DASH_LOGITS, 0.3, temperature=1.0, rho_min=0.2)[0],
        np.array([4, 2, 1]) / 7,
        rtol=1e-6,
    )
    np.testing.assert_array_equal(dash_targets(DASH_LOGITS, 0.2, rho_min=0.2), hard)


def test_dash_mask_hand_computed():
    # Soft targets: CE(q0, z0) = -(16 log 4/7 + 4 log 2/7 + log 1/7) / 21 = 0.757658,
    # CE(z1) = log 3 = 1.098612, CE(z2) ~ log(1 + 2 e^-10) = 9.08e-5.
    soft = dash_targets(DASH_LOGITS, 0.8)
    mask = dash_mask(DASH_LOGITS, soft, 0.8)
    assert mask.dtype == jnp.float32
    np.testing.assert_array_equal(mask, [1, 0, 1])
    np.testing.assert_array_equal(dash_mask(DASH_LOGITS, soft, 0.75), [0, 0, 1])
    # Hard targets: CE = -log 4/7 = 0.559616, log 3, 9.08e-5.
    hard = dash_targets(DASH_LOGITS, 0.05)
    np.testing.assert_array_equal(dash_mask(DASH_LOGITS, hard, 0.05), [0, 0, 1])
    np.testing.assert_array_equal(dash_mask(DASH_LOGITS, hard, 0.56), [1, 0, 1])
    np.testing.assert_array_equal(dash_mask(DASH_LOGITS, hard, 1.1), [1, 1, 1])
    np.testing.assert_array_equal(
        jax.jit(dash_mask)(DASH_LOGITS, hard, jnp.float32(0.56)), [1, 0, 1]
    )


def test_dash_targets_and_mask_carry_no_gradient():
    def total(logits, rho):
        targets = dash_targets(logits, rho)
        return jnp.sum(targets) + jnp.sum(dash_mask(logits, targets, rho))

    grads = jax.grad(total, argnums=(0, 1))(DASH_LOGITS, jnp.float32(0.8))
    np.testing.assert_array_equal(grads[0], np.zeros((3, 3)))
    assert float(grads[1]) == 0.0


def test_dash_initial_threshold_hand_computed():
    # CE([0, 0], 0) = log 2; CE([log 3, 0], 1) = -log(1/4) = 2 log 2: mean 1.5 log 2.
    logits = jnp.array([[0.0, 0.0], [math.log(3), 0.0]])
    value = dash_initial_threshold(logits, jnp.array([0, 1]))
    assert value.dtype == jnp.float32
    assert float(value) == pytest.approx(1.5 * math.log(2), rel=1e-6)
    # Soft labels: the same as one-hot.
    assert float(dash_initial_threshold(logits, jnp.eye(2))) == pytest.approx(float(value))
    # Padding is left out of the mean (even non-finite).
    padded = jnp.concatenate([logits, jnp.full((2, 2), jnp.nan)])
    where = jnp.array([True, True, False, False])
    assert float(dash_initial_threshold(padded, jnp.array([0, 1, 0, 0]), where=where)) == (
        pytest.approx(float(value), rel=1e-6)
    )
    assert float(dash_initial_threshold(logits, jnp.array([0, 1]), where=jnp.zeros(2, bool))) == 0
    # It is a state value: no gradient.
    grad = jax.grad(dash_initial_threshold)(logits, jnp.array([0, 1]))
    np.testing.assert_array_equal(grad, np.zeros((2, 2)))
    jitted = jax.jit(dash_initial_threshold)(logits, jnp.array([0, 1]))
    assert float(jitted) == pytest.approx(float(value), rel=1e-6)


def test_dash_errors():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="temperature"):
        dash_targets(logits, 0.5, temperature=0.0)
    with pytest.raises(ValueError, match="rho must have rank 0"):
        dash_targets(logits, jnp.ones(4))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        dash_mask(logits, jnp.zeros((4, 2)), 0.5)
    with pytest.raises(ValueError, match="steps_per_decay"):
        dash_threshold(0, 1.0, steps_per_decay=0)
    with pytest.raises(ValueError, match="gamma"):
        dash_threshold(0, 1.0, gamma=-1.27)
    with pytest.raises(ValueError, match="rho_min"):
        dash_threshold(0, 1.0, rho_min=-0.05)
    with pytest.raises(ValueError, match="step must have rank 0"):
        dash_threshold(jnp.arange(3), 1.0)
    with pytest.raises(ValueError, match="labels"):
        dash_initial_threshold(logits, jnp.zeros(3, jnp.int32))


def dash_inputs():
    logits = 2 * jax.random.normal(jax.random.key(12), (32, 5))
    labels = jax.random.randint(jax.random.key(13), (32,), 0, 5)
    return logits, labels, WHERE


def test_dash_initial_threshold_axis_name_equals_single_device(mesh):
    single = dash_initial_threshold(*dash_inputs()[:2], where=WHERE)
    mapped = jax.jit(
        jax.shard_map(
            lambda z, y, w: dash_initial_threshold(z, y, where=w, axis_name="data"),
            mesh=mesh,
            in_specs=P("data"),
            out_specs=P(),
        )
    )
    sharded = mapped(*shard(dash_inputs(), mesh))
    assert float(sharded) == pytest.approx(float(single), rel=1e-6)
    per_device = np.mean(
        [
            dash_initial_threshold(z, y, where=w)
            for z, y, w in zip(*(jnp.split(v, NUM_DEVICES) for v in dash_inputs()))
        ]
    )
    assert abs(float(per_device) - float(single)) > 1e-3


def test_dash_initial_threshold_global_view_jit_equals_single_device(global_mesh):
    single = dash_initial_threshold(*dash_inputs()[:2], where=WHERE)
    logits, labels, where = shard(dash_inputs(), global_mesh)
    sharded = jax.jit(dash_initial_threshold)(logits, labels, where=where)
    assert float(sharded) == pytest.approx(float(single), rel=1e-6)


_dash_threshold = jax.jit(dash_threshold, static_argnames="steps_per_decay")


@PROFILE
@given(
    step=st.integers(0, 2**31 - 1),
    rho_init=st.floats(0.0, 100.0),
    c0=st.sampled_from([1.0, 1.0001, 1.5]),
    gamma=st.sampled_from([1.0, 1.27, 3.0]),
    rho_min=st.sampled_from([0.0, 0.05, 0.5]),
    steps_per_decay=st.sampled_from([1, 1024, 10240]),
)
def test_dash_threshold_never_below_its_floor(step, rho_init, c0, gamma, rho_min, steps_per_decay):
    value = float(
        _dash_threshold(
            jnp.int32(step),
            jnp.float32(rho_init),
            c0=jnp.float32(c0),
            gamma=jnp.float32(gamma),
            rho_min=jnp.float32(rho_min),
            steps_per_decay=steps_per_decay,
        )
    )
    assert value >= np.float32(rho_min)
    expected = max(c0 * gamma ** -(step // steps_per_decay) * rho_init, rho_min)
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-30)
