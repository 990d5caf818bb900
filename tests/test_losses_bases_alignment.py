"""Distribution alignment, SoftMatch, AdaMatch and UDA (muscle_jax/losses/_alignment.py).

Expected values are worked out by hand in the comments or with a NumPy
transliteration of the reference code, never by calling the function under
test. conftest.py gives the process 8 simulated CPU devices for the
sharded == single-device checks of every batch statistic.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import PartitionSpec as P

from muscle_jax import losses
from muscle_jax.losses._alignment import (
    TSA_SCHEDULES,
    adamatch_consistency,
    adamatch_mask,
    adamatch_threshold,
    align_distribution,
    distribution_alignment_init,
    distribution_alignment_update,
    softmatch_consistency,
    softmatch_init,
    softmatch_update,
    softmatch_weights,
    tsa_mask,
    tsa_reduce,
    tsa_threshold,
    uda_consistency,
)
from tests.meshes import shard


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def assert_state_close(actual, expected, rtol=1e-6, atol=1e-7):
    assert sorted(actual) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=atol, err_msg=key)


# ---------------------------------------------------------------- distribution alignment


def test_distribution_alignment_init_targets():
    state = distribution_alignment_init(3)
    np.testing.assert_allclose(state["p_model"], np.full(3, 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(state["p_target"], np.full(3, 1 / 3), rtol=1e-6)
    assert state["p_model"].dtype == jnp.float32 and not bool(state["initialised"])
    # A class histogram of the labeled set is normalised: [2, 1, 1] / 4.
    labeled = distribution_alignment_init(3, p_target=jnp.array([2.0, 1.0, 1.0]))
    np.testing.assert_allclose(labeled["p_target"], [0.5, 0.25, 0.25], rtol=1e-6)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        distribution_alignment_init(1)
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        distribution_alignment_init(3, p_target=jnp.ones(4))


PROBS = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], np.float32)  # mean [0.3, 0.45, 0.25]
LABELED_PROBS = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]], np.float32)  # mean [0.6, 0.3, 0.1]


def test_distribution_alignment_update_hand_computed():
    state = distribution_alignment_init(3)
    second_batch = np.eye(3, dtype=np.float32)[:2]  # mean [0.5, 0.5, 0]
    # USB's start (the default): the first batch's mean replaces the uniform value,
    # then the EMA: 0.9 * [0.3, 0.45, 0.25] + 0.1 * [0.5, 0.5, 0] = [0.32, 0.455, 0.225].
    first = distribution_alignment_update(state, PROBS, momentum=0.9)
    np.testing.assert_allclose(first["p_model"], [0.3, 0.45, 0.25], rtol=1e-6)
    np.testing.assert_allclose(first["p_target"], np.full(3, 1 / 3), rtol=1e-6)
    assert bool(first["initialised"])
    second = distribution_alignment_update(first, second_batch, momentum=0.9)
    np.testing.assert_allclose(second["p_model"], [0.32, 0.455, 0.225], rtol=1e-6)
    # The uniform start averages 1/3 in: 0.9 / 3 + 0.1 * [0.3, 0.45, 0.25] =
    # [0.33, 0.345, 0.325], then 0.9 * that + 0.1 * [0.5, 0.5, 0] = [0.347, 0.3605, 0.2925].
    first = distribution_alignment_update(state, PROBS, momentum=0.9, first_batch=False)
    np.testing.assert_allclose(first["p_model"], [0.33, 0.345, 0.325], rtol=1e-6)
    assert bool(first["initialised"])
    second = distribution_alignment_update(first, second_batch, momentum=0.9, first_batch=False)
    np.testing.assert_allclose(second["p_model"], [0.347, 0.3605, 0.2925], rtol=1e-6)
    # Once a batch has been seen the two starts update alike: the flag, not the
    # option, decides (a state restored mid-run goes on with the EMA either way).
    for first_batch in (False, True):
        again = distribution_alignment_update(
            first, second_batch, momentum=0.9, first_batch=first_batch
        )
        np.testing.assert_allclose(again["p_model"], [0.347, 0.3605, 0.2925], rtol=1e-6)


def test_distribution_alignment_labeled_ema_target():
    state = distribution_alignment_init(3)
    # 0.9 / 3 + 0.1 * [0.6, 0.3, 0.1] = [0.36, 0.33, 0.31], from uniform even
    # with first_batch (USB and AdaMatch's code start the target uniform).
    for first_batch in (False, True):
        updated = distribution_alignment_update(
            state, PROBS, momentum=0.9, labeled_probs=LABELED_PROBS, first_batch=first_batch
        )
        np.testing.assert_allclose(updated["p_target"], [0.36, 0.33, 0.31], rtol=1e-6)
    # A fixed ("labeled") target is left alone without labeled_probs.
    fixed = distribution_alignment_init(3, p_target=jnp.array([0.5, 0.25, 0.25]))
    updated = distribution_alignment_update(fixed, PROBS, momentum=0.9)
    np.testing.assert_allclose(updated["p_target"], [0.5, 0.25, 0.25], rtol=1e-6)


def test_align_distribution_hand_computed():
    probs = jnp.array([[0.5, 0.3, 0.2]])
    # Ratios (target / model) [0.5, 1, 2]: [0.25, 0.3, 0.4] / 0.95.
    aligned = align_distribution(probs, jnp.array([0.5, 0.25, 0.25]), jnp.array([0.25, 0.25, 0.5]))
    np.testing.assert_allclose(aligned, [[0.25 / 0.95, 0.3 / 0.95, 0.4 / 0.95]], rtol=1e-5)
    # A model already at the target leaves the predictions as they are.
    same = align_distribution(PROBS, jnp.array([0.2, 0.5, 0.3]), jnp.array([0.2, 0.5, 0.3]))
    np.testing.assert_allclose(same, PROBS, rtol=1e-5)
    # A class the model never predicts: the 1e-6 bounds its ratio by
    # (1/3 + 1e-6) / 1e-6 ~ 3.3e5, so the row stays finite and normalised.
    never = align_distribution(probs, jnp.array([0.5, 0.5, 0.0]), jnp.full(3, 1 / 3))
    assert np.all(np.isfinite(never))
    assert float(never[0, 2]) > 0.9999
    np.testing.assert_allclose(never.sum(-1), [1.0], rtol=1e-6)


def test_distribution_alignment_where_masks_padding_and_empty_batches():
    padded = np.concatenate([PROBS, np.full((2, 3), np.nan, np.float32)])
    where = np.array([True, True, False, False])
    state = distribution_alignment_init(3)
    reference = distribution_alignment_update(
        state, PROBS, momentum=0.9, labeled_probs=LABELED_PROBS
    )
    masked = distribution_alignment_update(
        state,
        padded,
        momentum=0.9,
        labeled_probs=np.concatenate([LABELED_PROBS, np.ones((1, 3), np.float32)]),
        where=where,
        labeled_where=np.array([True, True, False]),
    )
    assert_state_close(masked, reference)
    # Nothing selected: no evidence, so nothing moves and nothing is initialised.
    nothing = distribution_alignment_update(state, PROBS, first_batch=True, where=np.zeros(2, bool))
    assert_state_close(nothing, state)


def test_distribution_alignment_jit_equals_eager_and_carries_no_gradient():
    state = distribution_alignment_init(3)
    update = jax.jit(distribution_alignment_update, static_argnames=("momentum", "first_batch"))
    for first_batch in (False, True):
        kwargs = {"momentum": 0.9, "labeled_probs": LABELED_PROBS, "first_batch": first_batch}
        assert_state_close(
            update(state, PROBS, **kwargs), distribution_alignment_update(state, PROBS, **kwargs)
        )
    p_model, p_target = jnp.array([0.2, 0.5, 0.3]), jnp.array([0.4, 0.4, 0.2])
    np.testing.assert_allclose(
        jax.jit(align_distribution)(PROBS, p_model, p_target),
        align_distribution(PROBS, p_model, p_target),
        rtol=1e-6,
    )
    weights = jnp.arange(6.0).reshape(2, 3)
    grads = jax.grad(
        lambda p, m, t: jnp.sum(weights * align_distribution(p, m, t)), argnums=(0, 1, 2)
    )(jnp.asarray(PROBS), p_model, p_target)
    for grad in grads:
        np.testing.assert_array_equal(grad, np.zeros_like(grad))
    grad_state = jax.grad(
        lambda p: jnp.sum(distribution_alignment_update(state, p)["p_model"] * weights[0])
    )(jnp.asarray(PROBS))
    np.testing.assert_array_equal(grad_state, np.zeros((2, 3)))


def test_distribution_alignment_errors():
    state = distribution_alignment_init(3)
    with pytest.raises(ValueError, match=r"p_model.*\(4,\).*\(3,\)"):
        distribution_alignment_update(state, np.ones((2, 4), np.float32) / 4)
    with pytest.raises(ValueError, match="same number of classes"):
        distribution_alignment_update(state, PROBS, labeled_probs=np.ones((2, 4)) / 4)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        distribution_alignment_update(state, PROBS, where=np.ones(3, bool))
    with pytest.raises(ValueError, match="momentum"):
        distribution_alignment_update(state, PROBS, momentum=1.5)
    with pytest.raises(ValueError, match="missing"):
        distribution_alignment_update({"p_model": state["p_model"]}, PROBS)
    with pytest.raises(ValueError, match="rank 2"):
        align_distribution(PROBS[0], state["p_model"], state["p_target"])
    with pytest.raises(ValueError, match=r"p_target.*\(3,\).*\(2,\)"):
        align_distribution(PROBS, state["p_model"], jnp.ones(2) / 2)


# ---------------------------------------------------------------- SoftMatch


def usb_softmatch(batches, momentum, num_classes, n_sigma=2.0):
    """USB's DistAlignEMAHook (uniform) + SoftMatchWeightingHook, transliterated to NumPy."""
    p_model, mu, var = None, 1.0 / num_classes, 1.0
    out = []
    for probs in batches:
        probs = np.asarray(probs, np.float64)
        mean = probs.mean(0)
        p_model = mean if p_model is None else p_model * momentum + mean * (1 - momentum)
        aligned = probs * (1.0 / num_classes + 1e-6) / (p_model + 1e-6)
        aligned /= aligned.sum(-1, keepdims=True)
        max_probs = aligned.max(-1)
        mu = momentum * mu + (1 - momentum) * max_probs.mean()
        var = momentum * var + (1 - momentum) * max_probs.var(ddof=1)
        weights = np.exp(-(np.minimum(max_probs - mu, 0.0) ** 2) / (2 * var / n_sigma**2))
        out.append((p_model.copy(), mu, var, aligned, weights))
    return out


def test_softmatch_update_hand_computed():
    probs = jnp.array([[0.5, 0.5], [0.9, 0.1]])
    state, aligned = softmatch_update(softmatch_init(2), probs, momentum=0.5)
    # p_hat = batch mean [0.7, 0.3] (first batch). Uniform alignment: row 0
    # 0.5/0.7 : 0.5/0.3 = 3 : 7; row 1 0.9/0.7 : 0.1/0.3 = 27 : 7.
    np.testing.assert_allclose(state["p_hat"], [0.7, 0.3], rtol=1e-6)
    np.testing.assert_allclose(aligned, [[0.3, 0.7], [27 / 34, 7 / 34]], rtol=1e-5)
    # c = [0.7, 27/34]: mean 0.7470588, deviations +-1.6/34, unbiased
    # variance 2 (1.6/34)^2 / 1 = 5.12/1156. mu = 0.5 * 1/2 + 0.5 * mean,
    # var = 0.5 * 1 + 0.5 * 5.12/1156.
    mean = (0.7 + 27 / 34) / 2
    np.testing.assert_allclose(state["mu"], 0.25 + 0.5 * mean, rtol=1e-5)
    np.testing.assert_allclose(state["var"], 0.5 + 0.5 * 5.12 / 1156, rtol=1e-5)
    assert bool(state["initialised"])
    # Starting from uniform instead: p_hat = [0.6, 0.4], rows [0.4, 0.6] and
    # [0.9/0.6 : 0.1/0.4] = [6/7, 1/7]; c = [0.6, 6/7], deviations +-0.9/7,
    # unbiased variance 2 (0.9/7)^2 = 1.62/49.
    state, aligned = softmatch_update(softmatch_init(2), probs, momentum=0.5, first_batch=False)
    np.testing.assert_allclose(state["p_hat"], [0.6, 0.4], rtol=1e-6)
    np.testing.assert_allclose(aligned, [[0.4, 0.6], [6 / 7, 1 / 7]], rtol=1e-5)
    np.testing.assert_allclose(state["mu"], 0.25 + 0.5 * (0.6 + 6 / 7) / 2, rtol=1e-5)
    np.testing.assert_allclose(state["var"], 0.5 + 0.5 * 1.62 / 49, rtol=1e-5)


def test_softmatch_matches_usb_over_several_steps():
    keys = jax.random.split(jax.random.key(20), 4)
    batches = [jax.nn.softmax(2 * jax.random.normal(k, (6, 4))) for k in keys]
    expected = usb_softmatch(batches, momentum=0.5, num_classes=4)
    step = jax.jit(lambda s, p: softmatch_update(s, p, momentum=0.5))
    state = softmatch_init(4)
    for probs, (p_hat, mu, var, aligned_ref, weights_ref) in zip(batches, expected):
        state, aligned = step(state, probs)
        np.testing.assert_allclose(state["p_hat"], p_hat, rtol=1e-5)
        np.testing.assert_allclose(state["mu"], mu, rtol=1e-5)
        np.testing.assert_allclose(state["var"], var, rtol=1e-5)
        np.testing.assert_allclose(aligned, aligned_ref, rtol=1e-5)
        weights = softmatch_weights(aligned, state["mu"], state["var"])
        np.testing.assert_allclose(weights, weights_ref, rtol=1e-5)
    # mu has caught up with the confidences: the less confident rows weigh less.
    assert float(weights.min()) < 1.0


def test_softmatch_weights_hand_computed():
    aligned = jnp.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.6, 0.2, 0.2]])
    # c = [0.9, 0.5, 0.6], mu = 0.7: deficits [0, -0.2, -0.1]. Code form
    # (n_sigma = 2): d^2 / (2 * 0.08 / 4) = 25 d^2 = [0, 1, 0.25].
    np.testing.assert_allclose(
        softmatch_weights(aligned, 0.7, 0.08), [1.0, math.exp(-1), math.exp(-0.25)], rtol=1e-5
    )
    # Paper form (n_sigma = 1): d^2 / 0.16 = [0, 0.25, 0.0625].
    np.testing.assert_allclose(
        softmatch_weights(aligned, 0.7, 0.08, n_sigma=1.0),
        [1.0, math.exp(-0.25), math.exp(-0.0625)],
        rtol=1e-5,
    )
    # No spread at all: at or above the mean is still 1 (not 0/0), below is 0.
    np.testing.assert_array_equal(softmatch_weights(aligned, 0.6, 0.0), [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="n_sigma"):
        softmatch_weights(aligned, 0.7, 0.08, n_sigma=0.0)
    with pytest.raises(ValueError, match="scalar"):
        softmatch_weights(aligned, jnp.ones(3), 0.08)


def test_softmatch_consistency_hand_computed_and_gradient():
    strong = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # Pseudo-labels: the argmax of the weak logits themselves, [0, 2].
    weak = jnp.array([[1.0, 0.9, -2.0], [0.0, 0.0, 3.0]])
    weights = jnp.array([0.5, 1.0])
    # Row 0: CE = log(e^2 + 2) - 2 = log(1 + 2 e^-2); row 1: log 3.
    expected = [0.5 * math.log(1 + 2 * math.exp(-2)), math.log(3)]
    np.testing.assert_allclose(softmatch_consistency(strong, weak, weights), expected, rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(softmatch_consistency)(strong, weak, weights), expected, rtol=1e-6
    )
    grads = jax.grad(lambda s, w, v: jnp.sum(softmatch_consistency(s, w, v)), argnums=(0, 1, 2))(
        strong, weak, weights
    )
    # d/dz_s = w_i (softmax(z_s) - one_hot(label)).
    one_hot = np.eye(3)[[0, 2]]
    np.testing.assert_allclose(
        grads[0],
        np.asarray(weights)[:, None] * (np.exp(log_softmax(strong)) - one_hot),
        rtol=1e-5,
    )
    np.testing.assert_array_equal(grads[1], np.zeros((2, 3)))
    np.testing.assert_array_equal(grads[2], np.zeros(2))
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        softmatch_consistency(strong, weak, jnp.ones(3))


def test_softmatch_update_edge_cases_and_errors():
    # One example has no variance: var keeps its value, mu still moves.
    state, _ = softmatch_update(softmatch_init(2), jnp.array([[0.9, 0.1]]), momentum=0.5)
    assert float(state["var"]) == 1.0
    # Aligned to [0.5, 0.5] up to the 1e-6 in the ratios: mu = 0.5 * 1/2 + 0.5 * 0.5.
    np.testing.assert_allclose(state["mu"], 0.5, rtol=1e-5)
    # NaN padding is left out of every statistic.
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(21), (5, 3)))
    padded = jnp.concatenate([probs, jnp.full((3, 3), jnp.nan)])
    where = jnp.array([True] * 5 + [False] * 3)
    reference, aligned = softmatch_update(softmatch_init(3), probs, momentum=0.9)
    masked, masked_aligned = softmatch_update(softmatch_init(3), padded, momentum=0.9, where=where)
    assert_state_close(masked, reference, rtol=1e-6)
    np.testing.assert_allclose(masked_aligned[:5], aligned, rtol=1e-6)
    # Nothing selected: nothing moves.
    empty, _ = softmatch_update(softmatch_init(3), probs, where=jnp.zeros(5, bool))
    assert_state_close(empty, softmatch_init(3))
    with pytest.raises(ValueError, match="missing"):
        softmatch_update(distribution_alignment_init(3), probs)
    with pytest.raises(ValueError, match=r"p_hat.*\(3,\).*\(4,\)"):
        softmatch_update(softmatch_init(4), probs)
    with pytest.raises(ValueError, match="at least 2 classes"):
        softmatch_update(softmatch_init(2), jnp.ones((4, 1)))


# ---------------------------------------------------------------- AdaMatch

# Max probabilities 0.9 and 0.5: mean 0.7, so tau_rel = 0.95 * 0.7 = 0.665.
LABELED_LOGITS = jnp.log(jnp.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2]]))


def test_adamatch_relative_threshold_hand_computed():
    assert float(adamatch_threshold(LABELED_LOGITS)) == pytest.approx(0.665, rel=1e-6)
    # The paper's tau: 0.9 * 0.7.
    assert float(adamatch_threshold(LABELED_LOGITS, threshold=0.9)) == pytest.approx(0.63, 1e-6)
    # Only the first labeled row: 0.95 * 0.9; none: the absolute tau.
    only_first = adamatch_threshold(LABELED_LOGITS, labeled_where=jnp.array([True, False]))
    assert float(only_first) == pytest.approx(0.855, rel=1e-6)
    none = adamatch_threshold(LABELED_LOGITS, labeled_where=jnp.zeros(2, bool))
    assert float(none) == pytest.approx(0.95, rel=1e-6)
    # A more confident model raises the bar: [0.99, ...] twice -> 0.95 * 0.99.
    confident = jnp.log(jnp.array([[0.99, 0.005, 0.005], [0.005, 0.99, 0.005]]))
    assert float(adamatch_threshold(confident)) == pytest.approx(0.9405, rel=1e-5)


def test_adamatch_mask_and_loss_hand_computed_and_gradient():
    # Max aligned probabilities [0.7, 0.66, 0.67, 0.6] against 0.665.
    aligned = jnp.array([[0.2, 0.7, 0.1], [0.66, 0.24, 0.1], [0.13, 0.2, 0.67], [0.6, 0.3, 0.1]])
    np.testing.assert_array_equal(adamatch_mask(aligned, LABELED_LOGITS), [1, 0, 1, 0])
    # A fixed tau of 0.95 would have masked everything out.
    np.testing.assert_array_equal(
        losses.fixmatch_consistency(jnp.zeros((4, 3)), jnp.log(aligned))[1], [0, 0, 0, 0]
    )
    # Pseudo-labels are the aligned argmax [1, 0, 2, 0]; strong logits
    # [1, 0, 0] give CE(label 0) = log(e + 2) - 1 and CE(other) = log(e + 2).
    strong = jnp.tile(jnp.array([[1.0, 0.0, 0.0]]), (4, 1))
    loss, mask = adamatch_consistency(strong, aligned, LABELED_LOGITS)
    log_z = math.log(math.e + 2)
    np.testing.assert_allclose(loss, [log_z, 0.0, log_z, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(mask, [1, 0, 1, 0])
    jitted_loss, jitted_mask = jax.jit(adamatch_consistency)(strong, aligned, LABELED_LOGITS)
    np.testing.assert_allclose(jitted_loss, loss, rtol=1e-6)
    np.testing.assert_array_equal(jitted_mask, mask)
    grads = jax.grad(lambda s, a, z: jnp.sum(adamatch_consistency(s, a, z)[0]), argnums=(0, 1, 2))(
        strong, aligned, LABELED_LOGITS
    )
    one_hot = np.eye(3)[[1, 0, 2, 0]]
    expected = np.asarray(mask)[:, None] * (np.exp(log_softmax(strong)) - one_hot)
    np.testing.assert_allclose(grads[0], expected, rtol=1e-5, atol=1e-7)
    assert np.all(np.abs(np.asarray(grads[0])[[0, 2]]) > 0)
    np.testing.assert_array_equal(grads[1], np.zeros((4, 3)))
    np.testing.assert_array_equal(grads[2], np.zeros((2, 3)))


def test_adamatch_errors():
    aligned = jnp.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="same number of classes"):
        adamatch_mask(aligned, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="threshold"):
        adamatch_threshold(LABELED_LOGITS, threshold=1.5)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        adamatch_threshold(LABELED_LOGITS, labeled_where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(4, 3\)"):
        adamatch_consistency(jnp.zeros((4, 2)), aligned, LABELED_LOGITS)


# ---------------------------------------------------------------- UDA

# Confidences 0.6 and 0.9. Sharpened with T = 0.4 (p^2.5, renormalised):
# 0.6^2.5 = 0.2788548, 0.3^2.5 = 0.0492950, 0.1^2.5 = 0.0031623, sum
# 0.3313121 -> [0.841668, 0.148787, 0.009545]; and 0.9^2.5 = 0.7684334,
# 0.05^2.5 = 0.000559, sum 0.7695514 -> [0.998547, 0.000726, 0.000726].
WEAK_PROBS = np.array([[0.6, 0.3, 0.1], [0.9, 0.05, 0.05]])
SHARPENED = np.array([[0.841668, 0.148787, 0.009545], [0.998547, 0.000726, 0.000726]])


def entropy(probs):
    return -(probs * np.log(probs)).sum(-1)


def uda_targets_from_gradient(weak_logits, temperature):
    # With strong logits 0 and no mask, d/dz_s sum(loss) = 1/C - target.
    grad = jax.grad(
        lambda s: jnp.sum(
            uda_consistency(s, weak_logits, temperature=temperature, threshold=0.0)[0]
        )
    )(jnp.zeros(weak_logits.shape))
    return 1 / weak_logits.shape[-1] - np.asarray(grad)


def test_uda_sharpening_hand_computed():
    weak = jnp.log(jnp.asarray(WEAK_PROBS, jnp.float32))
    sharpened = uda_targets_from_gradient(weak, 0.4)
    np.testing.assert_allclose(sharpened, SHARPENED, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(sharpened, losses.sharpen(WEAK_PROBS, temperature=0.4), 1e-4)
    # T = 1 (USB, whose temperature is unused) is the plain prediction.
    plain = uda_targets_from_gradient(weak, 1.0)
    np.testing.assert_allclose(plain, WEAK_PROBS, rtol=1e-5, atol=1e-7)
    # Sharper: a higher top probability and a lower entropy than T = 1.
    assert np.all(sharpened.max(-1) > plain.max(-1))
    assert np.all(entropy(sharpened) < entropy(plain))


def test_uda_loss_and_mask_hand_computed():
    weak = jnp.log(jnp.asarray(WEAK_PROBS, jnp.float32))
    strong = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]))
    # Soft CE -sum(t log q) with q = [0.5, 0.25, 0.25]:
    # row 1 (c = 0.9 >= 0.8): 0.998547 log 2 + 2 * 0.000726 log 4.
    row_1 = SHARPENED[1, 0] * math.log(2) + (SHARPENED[1, 1] + SHARPENED[1, 2]) * math.log(4)
    loss, mask = uda_consistency(strong, weak)
    # Row 0 is out: its unsharpened c = 0.6 < 0.8, although the sharpened
    # target's 0.8417 would pass; the mask is taken before sharpening.
    np.testing.assert_array_equal(mask, [0.0, 1.0])
    np.testing.assert_allclose(loss, [0.0, row_1], rtol=1e-5)
    # With every row in, row 0 is 0.841668 log 2 + 0.158332 log 4.
    row_0 = SHARPENED[0, 0] * math.log(2) + (SHARPENED[0, 1] + SHARPENED[0, 2]) * math.log(4)
    everything, _ = uda_consistency(strong, weak, threshold=0.0)
    np.testing.assert_allclose(everything, [row_0, row_1], rtol=1e-5)


def test_uda_gradient_only_through_strong_and_jit():
    weak = 3 * jax.random.normal(jax.random.key(22), (6, 5))
    strong = jax.random.normal(jax.random.key(23), (6, 5))
    grads = jax.grad(lambda s, w: jnp.sum(uda_consistency(s, w, threshold=0.5)[0]), (0, 1))(
        strong, weak
    )
    _, mask = uda_consistency(strong, weak, threshold=0.5)
    assert 0 < float(mask.sum()) < 6
    assert np.all(np.isfinite(grads[0]))
    np.testing.assert_array_equal(grads[0][np.asarray(mask) == 0], 0.0)
    assert np.all(np.abs(grads[0][np.asarray(mask) == 1]).sum(-1) > 0)
    np.testing.assert_array_equal(grads[1], np.zeros((6, 5)))
    jitted = jax.jit(uda_consistency, static_argnames=("temperature", "threshold"))
    for got, want in zip(
        jitted(strong, weak, threshold=0.5), uda_consistency(strong, weak, threshold=0.5)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        uda_consistency(strong, weak, temperature=0.0)
    with pytest.raises(ValueError, match=r"\(6, 5\).*\(6, 4\)"):
        uda_consistency(strong, weak[:, :4])


# ---------------------------------------------------------------- TSA

# K = 10, so eta = alpha * 0.9 + 0.1. At t/T = 0, 1/2, 1:
# linear alpha = [0, 0.5, 1]                         -> [0.1, 0.55, 1.0];
# exp    alpha = [e^-5, e^-2.5, 1] = [0.0067379, 0.0820850, 1]
#                                                    -> [0.1060641, 0.1738765, 1.0];
# log    alpha = [0, 1 - e^-2.5, 1 - e^-5] = [0, 0.9179150, 0.9932621]
#                                                    -> [0.1, 0.9261235, 0.9939358].
TSA_EXPECTED = {
    "none": [1.0, 1.0, 1.0],
    "linear": [0.1, 0.55, 1.0],
    "exp": [0.1060641, 0.1738765, 1.0],
    "log": [0.1, 0.9261235, 0.9939358],
}


@pytest.mark.parametrize("schedule", TSA_SCHEDULES)
def test_tsa_threshold_hand_computed(schedule):
    values = [float(tsa_threshold(step, 1000, 10, schedule)) for step in (0, 500, 1000)]
    np.testing.assert_allclose(values, TSA_EXPECTED[schedule], rtol=1e-5)
    traced = jax.jit(lambda t: tsa_threshold(t, 1000, 10, schedule))(jnp.array(500))
    assert float(traced) == pytest.approx(TSA_EXPECTED[schedule][1], rel=1e-5)


def test_tsa_mask_correct_class_against_max_prob():
    logits = jnp.log(jnp.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]))
    labels = jnp.array([0, 0, 1])
    # p(label) = [0.6, 0.2, 0.4] against eta 0.55: row 0 is already fitted.
    np.testing.assert_array_equal(tsa_mask(logits, labels, 0.55), [0.0, 1.0, 1.0])
    # TorchSSL/USB test max p = [0.6, 0.7, 0.5]: the confidently wrong row 1
    # is dropped too.
    np.testing.assert_array_equal(
        tsa_mask(logits, labels, 0.55, use_max_prob=True), [0.0, 0.0, 1.0]
    )
    # eta = 1 (the end of training, or "none") keeps everything.
    np.testing.assert_array_equal(tsa_mask(logits, labels, tsa_threshold(0, 1, 3, "none")), 1.0)
    # Under jit with a traced threshold, and no gradient through the mask.
    jitted = jax.jit(tsa_mask, static_argnames="use_max_prob")
    np.testing.assert_array_equal(jitted(logits, labels, jnp.float32(0.55)), [0.0, 1.0, 1.0])
    grad = jax.grad(lambda z: jnp.sum(tsa_mask(z, labels, 0.55) * z[:, 0]))(logits)
    np.testing.assert_array_equal(grad[:, 1:], np.zeros((3, 2)))
    np.testing.assert_array_equal(grad[:, 0], tsa_mask(logits, labels, 0.55))


def test_tsa_reduce_over_the_kept_images_or_the_batch_by_hand():
    # Rows 0 and 2 of 4 kept, losses [1, 3, 5, 7]: the paper's code (1 + 5) / 2 = 3,
    # TorchSSL's and USB's (1 + 5) / 4 = 1.5.
    per_example = jnp.array([1.0, 3.0, 5.0, 7.0])
    mask = jnp.array([1.0, 0.0, 1.0, 0.0])
    assert float(tsa_reduce(per_example, mask, over_kept=True)) == pytest.approx(3.0)
    assert float(tsa_reduce(per_example, mask, over_kept=False)) == pytest.approx(1.5)
    # Nothing kept gives 0 either way (no 0 / 0), and a NaN loss of a dropped row stays out.
    for over_kept in (True, False):
        assert float(tsa_reduce(per_example, jnp.zeros(4), over_kept=over_kept)) == 0.0
        nan_dropped = per_example.at[1].set(jnp.nan)
        assert np.isfinite(float(tsa_reduce(nan_dropped, mask, over_kept=over_kept)))
    # The gradient reaches the kept rows only: 1/2 each over the kept, 1/4 over the batch.
    grad = jax.grad(lambda x: tsa_reduce(x, mask, over_kept=True))(per_example)
    np.testing.assert_allclose(grad, [0.5, 0.0, 0.5, 0.0])
    grad = jax.jit(jax.grad(lambda x: tsa_reduce(x, mask, over_kept=False)))(per_example)
    np.testing.assert_allclose(grad, [0.25, 0.0, 0.25, 0.0])
    with pytest.raises(ValueError, match="rank 1"):
        tsa_reduce(jnp.zeros((2, 2)), jnp.zeros(2), over_kept=True)
    with pytest.raises(ValueError, match=r"mask must have the shape of losses \(4,\)"):
        tsa_reduce(per_example, jnp.zeros(3), over_kept=True)


def test_tsa_errors():
    with pytest.raises(ValueError, match="Unknown TSA schedule"):
        tsa_threshold(0, 10, 3, "cosine")
    with pytest.raises(ValueError, match="total_steps"):
        tsa_threshold(0, 0, 3, "linear")
    with pytest.raises(ValueError, match="num_classes"):
        tsa_threshold(0, 10, 1, "linear")
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        tsa_mask(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32), 0.5)
    with pytest.raises(ValueError, match="scalar"):
        tsa_mask(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones(2))


# ---------------------------------------------------------------- sharded == single device


# Uneven per-device counts, so a per-device mean would differ from the global one.
WHERE = jnp.arange(32) % 5 != 0
LABELED_WHERE = jnp.arange(16) % 3 != 0


def sharded_inputs():
    keys = jax.random.split(jax.random.key(24), 2)
    probs = jax.nn.softmax(2 * jax.random.normal(keys[0], (32, 5)) + jnp.arange(5.0) / 2)
    labeled_logits = 2 * jax.random.normal(keys[1], (16, 5))
    return probs, labeled_logits


def started_state():
    # Not the initial state, so that the EMA terms are non-trivial too.
    state = softmatch_init(5)
    return {
        **state,
        "p_hat": jnp.array([0.3, 0.25, 0.2, 0.15, 0.1]),
        "mu": jnp.float32(0.5),
        "var": jnp.float32(0.2),
        "initialised": jnp.array(True),
    }


def test_distribution_alignment_update_axis_name_equals_single_device(mesh):
    probs, labeled_logits = sharded_inputs()
    labeled_probs = jax.nn.softmax(labeled_logits)
    state = distribution_alignment_init(5)

    def update(state, probs, labeled_probs, where, labeled_where, axis_name=None):
        return distribution_alignment_update(
            state,
            probs,
            momentum=0.9,
            labeled_probs=labeled_probs,
            first_batch=True,
            where=where,
            labeled_where=labeled_where,
            axis_name=axis_name,
        )

    single = update(state, probs, labeled_probs, WHERE, LABELED_WHERE)
    mapped = jax.jit(
        jax.shard_map(
            lambda *args: update(*args, axis_name="data"),
            mesh=mesh,
            in_specs=(P(), P("data"), P("data"), P("data"), P("data")),
            out_specs=P(),
        )
    )
    sharded = mapped(state, *shard((probs, labeled_probs, WHERE, LABELED_WHERE), mesh))
    assert_state_close(sharded, single, rtol=1e-6, atol=1e-7)
    # The first batch's mean over the selected rows, computed directly.
    np.testing.assert_allclose(
        single["p_model"], np.asarray(probs)[np.asarray(WHERE)].mean(0), rtol=1e-5
    )


def test_softmatch_update_axis_name_equals_single_device(mesh):
    probs, _ = sharded_inputs()
    state = started_state()
    single_state, single_aligned = softmatch_update(state, probs, momentum=0.9, where=WHERE)
    mapped = jax.jit(
        jax.shard_map(
            lambda s, p, w: softmatch_update(s, p, momentum=0.9, where=w, axis_name="data"),
            mesh=mesh,
            in_specs=(P(), P("data"), P("data")),
            out_specs=(P(), P("data")),
        )
    )
    sharded_state, sharded_aligned = mapped(state, *shard((probs, WHERE), mesh))
    assert_state_close(sharded_state, single_state, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sharded_aligned, single_aligned, rtol=1e-6)
    # The global unbiased variance, not the mean of the devices' variances.
    confidence = np.asarray(single_aligned, np.float64).max(-1)
    keep = np.asarray(WHERE)
    global_variance = confidence[keep].var(ddof=1)
    np.testing.assert_allclose(sharded_state["var"], 0.9 * 0.2 + 0.1 * global_variance, rtol=1e-5)
    per_device = np.mean(
        [c[k].var(ddof=1) for c, k in zip(np.split(confidence, 8), np.split(keep, 8))]
    )
    assert abs(per_device - global_variance) > 1e-2 * global_variance


def test_adamatch_threshold_and_mask_axis_name_equal_single_device(mesh):
    probs, labeled_logits = sharded_inputs()
    single_threshold = adamatch_threshold(labeled_logits, labeled_where=LABELED_WHERE)
    single_mask = adamatch_mask(probs, labeled_logits, labeled_where=LABELED_WHERE)
    mapped = jax.jit(
        jax.shard_map(
            lambda p, z, w: (
                adamatch_threshold(z, labeled_where=w, axis_name="data"),
                adamatch_mask(p, z, labeled_where=w, axis_name="data"),
            ),
            mesh=mesh,
            in_specs=P("data"),
            out_specs=(P(), P("data")),
        )
    )
    threshold, mask = mapped(*shard((probs, labeled_logits, LABELED_WHERE), mesh))
    np.testing.assert_allclose(threshold, single_threshold, rtol=1e-6)
    np.testing.assert_array_equal(mask, single_mask)
    confidence = np.exp(log_softmax(labeled_logits)).max(-1)[np.asarray(LABELED_WHERE)]
    assert float(single_threshold) == pytest.approx(0.95 * confidence.mean(), rel=1e-5)
    assert 0 < float(single_mask.sum()) < 32


def test_batch_statistics_global_view_jit_equal_single_device(global_mesh):
    probs, labeled_logits = sharded_inputs()
    labeled_probs = jax.nn.softmax(labeled_logits)

    def statistics(probs, labeled_probs, labeled_logits, where, labeled_where):
        alignment = distribution_alignment_update(
            distribution_alignment_init(5),
            probs,
            labeled_probs=labeled_probs,
            where=where,
            labeled_where=labeled_where,
        )
        softmatch, aligned = softmatch_update(started_state(), probs, where=where)
        threshold = adamatch_threshold(labeled_logits, labeled_where=labeled_where)
        return alignment, softmatch, aligned, threshold

    inputs = (probs, labeled_probs, labeled_logits, WHERE, LABELED_WHERE)
    # Both jitted (jit == eager is checked above): one compilation, not one per eager op.
    single = jax.jit(statistics)(*inputs)
    sharded = jax.jit(statistics)(*shard(inputs, global_mesh))
    assert_state_close(sharded[0], single[0], rtol=1e-6, atol=1e-7)
    assert_state_close(sharded[1], single[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sharded[2], single[2], rtol=1e-6)
    np.testing.assert_allclose(sharded[3], single[3], rtol=1e-6)


# ---------------------------------------------------------------- properties

# (batch, classes): one example, a single pair of classes, odd sizes, the largest.
shapes = st.sampled_from([(1, 2), (7, 10), (33, 57), (256, 100)])
scales = st.sampled_from([0.1, 1.0, 5.0, 50.0])
PROFILE = settings(max_examples=20, deadline=None)


def random_logits(seed, count, shape, scale):
    return [
        scale * jax.random.normal(k, shape) for k in jax.random.split(jax.random.key(seed), count)
    ]


@jax.jit
def _softmatch_two_steps(logits_a, logits_b):
    state = softmatch_init(logits_a.shape[-1])
    state, aligned_a = softmatch_update(state, jax.nn.softmax(logits_a))
    weights_a = softmatch_weights(aligned_a, state["mu"], state["var"])
    state, aligned_b = softmatch_update(state, jax.nn.softmax(logits_b))
    weights_b = softmatch_weights(aligned_b, state["mu"], state["var"])
    return state, jnp.stack([aligned_a, aligned_b]), jnp.stack([weights_a, weights_b])


@PROFILE
@given(shape=shapes, scale=scales, seed=st.integers(0, 2**16))
def test_softmatch_weights_in_unit_interval(shape, scale, seed):
    state, aligned, weights = _softmatch_two_steps(*random_logits(seed, 2, shape, scale))
    assert np.all(weights > 0) and np.all(weights <= 1)
    np.testing.assert_allclose(aligned.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(state["p_hat"].sum(), 1.0, rtol=1e-5)
    assert float(state["var"]) > 0 and 0 < float(state["mu"]) <= 1


@jax.jit
def _aligned_distributions(logits, model_logits, target_logits):
    probs = jax.nn.softmax(logits)
    state = distribution_alignment_update(
        distribution_alignment_init(logits.shape[-1], p_target=jax.nn.softmax(target_logits[0])),
        probs,
        labeled_probs=jax.nn.softmax(target_logits),
    )
    return (
        align_distribution(
            probs, jax.nn.softmax(model_logits[0]), jax.nn.softmax(target_logits[0])
        ),
        align_distribution(probs, state["p_model"], state["p_target"]),
        state,
    )


@PROFILE
@given(shape=shapes, scale=scales, seed=st.integers(0, 2**16))
def test_aligned_distributions_sum_to_one(shape, scale, seed):
    random_aligned, state_aligned, state = _aligned_distributions(
        *random_logits(seed, 3, shape, scale)
    )
    for aligned in (random_aligned, state_aligned):
        assert np.all(np.isfinite(aligned)) and np.all(aligned >= 0)
        np.testing.assert_allclose(aligned.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(state["p_model"].sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(state["p_target"].sum(), 1.0, rtol=1e-5)
