"""Losses of related methods: SDT (kWTA + homeostasis), self-adaptive training, MIO.

Expected values are worked out by hand or with NumPy here, never by calling
the function under test. conftest.py gives the process 8 simulated CPU
devices for the sharded == single-device checks.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from muscle_jax import losses
from tests.meshes import NUM_DEVICES, shard


def softplus(x):
    return np.log1p(np.exp(x))


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


# ---------------------------------------------------------------- kWTA targets


def test_kwta_picks_the_largest_shifted_outputs():
    outputs = jnp.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    np.testing.assert_array_equal(
        losses.kwta_targets(outputs, jnp.zeros(3)), [[0, 1, 0], [1, 0, 0]]
    )
    # The threshold of unit 0 moves row 1's win to unit 1: [0.1, 0.3, 0.1].
    np.testing.assert_array_equal(
        losses.kwta_targets(outputs, jnp.array([0.5, 0.0, 0.0])), [[0, 1, 0], [0, 1, 0]]
    )


def test_kwta_k_winners():
    # Shifted: [0.1, 0.3, 0.2, 0.0] -> units 1 and 2 win.
    outputs = jnp.array([[0.5, 0.3, 0.2, 0.0]])
    targets = losses.kwta_targets(outputs, jnp.array([0.4, 0.0, 0.0, 0.0]), k=2)
    assert targets.dtype == jnp.float32
    np.testing.assert_array_equal(targets, [[0, 1, 1, 0]])
    everything = losses.kwta_targets(outputs, jnp.zeros(4), k=4)
    np.testing.assert_array_equal(everything, np.ones((1, 4)))


def test_kwta_ties_go_to_the_lower_index():
    outputs = jnp.array([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.5, 2.0]])
    np.testing.assert_array_equal(
        losses.kwta_targets(outputs, jnp.zeros(4), k=2), [[1, 1, 0, 0], [0, 1, 0, 1]]
    )
    np.testing.assert_array_equal(
        losses.kwta_targets(outputs, jnp.zeros(4), k=1), [[1, 0, 0, 0], [0, 1, 0, 0]]
    )


def test_kwta_targets_carry_no_gradient_and_match_under_jit():
    outputs = jax.random.normal(jax.random.key(0), (6, 5))
    thresholds = jnp.linspace(-0.2, 0.2, 5)
    grads = jax.grad(lambda o, h: jnp.sum(losses.kwta_targets(o, h, k=2) * o), argnums=(0, 1))(
        outputs, thresholds
    )
    # d/do sum(y * o) = y: only the product's own factor, nothing through y.
    np.testing.assert_array_equal(grads[0], losses.kwta_targets(outputs, thresholds, k=2))
    np.testing.assert_array_equal(grads[1], np.zeros(5))
    jitted = jax.jit(losses.kwta_targets, static_argnames="k")(outputs, thresholds, k=2)
    np.testing.assert_array_equal(jitted, losses.kwta_targets(outputs, thresholds, k=2))
    np.testing.assert_array_equal(jitted.sum(-1), np.full(6, 2.0))


@pytest.mark.parametrize(
    ("outputs_shape", "thresholds_shape", "k", "fragment"),
    [
        ((4, 3), (3,), 0, "k must be in [1, 3]"),
        ((4, 3), (3,), 4, "got 4"),
        ((4, 3), (4,), 1, "(4,)"),
        ((3,), (3,), 1, "rank 2"),
    ],
)
def test_kwta_errors(outputs_shape, thresholds_shape, k, fragment):
    with pytest.raises(ValueError) as info:
        losses.kwta_targets(jnp.zeros(outputs_shape), jnp.zeros(thresholds_shape), k=k)
    assert fragment in str(info.value)


# ---------------------------------------------------------------- homeostasis


def test_homeostasis_hand_computed():
    targets = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    thresholds = np.array([0.0, 0.1, 0.2], np.float32)
    # Win rates [3/4, 1/4, 0] against a share of 1/3 each.
    expected = thresholds + 0.3 * (np.array([0.75, 0.25, 0.0]) - 1 / 3)
    updated = losses.homeostasis_update(thresholds, targets, rate=0.3)
    np.testing.assert_allclose(updated, expected, rtol=1e-6)
    assert updated[0] > thresholds[0]  # wins too often
    assert updated[2] < thresholds[2]  # never wins


def test_homeostasis_k_sets_the_share():
    # Every unit wins exactly k/N of the time: nothing moves.
    targets = jnp.array([[1, 1, 0, 0], [0, 0, 1, 1]], jnp.float32)
    np.testing.assert_allclose(
        losses.homeostasis_update(jnp.ones(4), targets, k=2, rate=1.0), np.ones(4)
    )
    # With k=1 the same targets are twice the share: +rate * (1/2 - 1/4).
    np.testing.assert_allclose(
        losses.homeostasis_update(jnp.ones(4), targets, k=1, rate=1.0), np.full(4, 1.25)
    )


def test_homeostasis_where_selects_the_examples():
    targets = jnp.array([[1, 0], [1, 0], [0, 1], [0, 1]], jnp.float32)
    where = jnp.array([True, True, False, False])
    # Over the first two rows only, unit 0 always wins: [+0.5, -0.5] * rate.
    np.testing.assert_allclose(
        losses.homeostasis_update(jnp.zeros(2), targets, rate=0.2, where=where), [0.1, -0.1]
    )
    nothing = jnp.zeros(4, bool)
    np.testing.assert_array_equal(
        losses.homeostasis_update(jnp.array([0.3, -0.3]), targets, where=nothing),
        np.array([0.3, -0.3], np.float32),
    )


def test_homeostasis_balances_a_biased_output_layer():
    # Unit 0 starts out largest for every example; homeostasis must bring the
    # other units into play until each wins about its share.
    outputs = jax.random.uniform(jax.random.key(1), (64, 4)) + jnp.array([1.0, 0.0, 0.0, 0.0])

    @jax.jit
    def run(thresholds):
        def step(_, thresholds):
            targets = losses.kwta_targets(outputs, thresholds)
            return losses.homeostasis_update(thresholds, targets, rate=0.1)

        return jax.lax.fori_loop(0, 300, step, thresholds)

    initial_rate = losses.kwta_targets(outputs, jnp.zeros(4)).mean(0)
    np.testing.assert_array_equal(initial_rate, [1, 0, 0, 0])
    final_rate = losses.kwta_targets(outputs, run(jnp.zeros(4))).mean(0)
    assert float(final_rate.min()) > 0.1 and float(final_rate.max()) < 0.4


def test_homeostasis_under_jit_and_errors():
    targets = losses.kwta_targets(jax.random.normal(jax.random.key(2), (8, 3)), jnp.zeros(3))
    thresholds = jnp.array([0.1, 0.0, -0.1])
    np.testing.assert_allclose(
        jax.jit(losses.homeostasis_update)(thresholds, targets, rate=0.05),
        losses.homeostasis_update(thresholds, targets, rate=0.05),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        losses.homeostasis_update(jnp.zeros(2), targets)
    with pytest.raises(ValueError, match="k must be"):
        losses.homeostasis_update(thresholds, targets, k=5)
    with pytest.raises(ValueError, match=r"\(8,\)"):
        losses.homeostasis_update(thresholds, targets, where=jnp.ones(7, bool))


# ---------------------------------------------------------------- SDT loss


def test_self_defined_target_loss_hand_computed_and_gradient():
    probs = jnp.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    targets = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected = [(0.09 + 0.04 + 0.01) / 3, (0.04 + 0.25 + 0.49) / 3]
    np.testing.assert_allclose(losses.self_defined_target_loss(probs, targets), expected, 1e-6)
    grad_p, grad_t = jax.grad(
        lambda p, t: losses.self_defined_target_loss(p, t).sum(), argnums=(0, 1)
    )(probs, targets)
    np.testing.assert_allclose(grad_p, 2 * (probs - targets) / 3, rtol=1e-6)
    np.testing.assert_array_equal(grad_t, np.zeros((2, 3)))


def test_self_defined_target_loss_with_kwta_targets_under_jit():
    logits = jax.random.normal(jax.random.key(3), (5, 4))

    @jax.jit
    def loss(logits):
        probs = jax.nn.softmax(logits)
        return losses.self_defined_target_loss(probs, losses.kwta_targets(probs, jnp.zeros(4)))

    probs = np.asarray(jax.nn.softmax(logits), np.float64)
    one_hot = np.eye(4)[probs.argmax(-1)]
    np.testing.assert_allclose(loss(logits), ((probs - one_hot) ** 2).mean(-1), rtol=1e-5)
    assert np.all(np.isfinite(jax.grad(lambda z: loss(z).sum())(logits)))


def test_self_defined_target_loss_shape_error():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        losses.self_defined_target_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


# ---------------------------------------------------------------- self-adaptive training


def test_self_adaptive_update_hand_computed_and_stop_gradient():
    targets = jnp.array([[1.0, 0.0, 0.0]])
    probs = jnp.array([[0.2, 0.5, 0.3]])
    np.testing.assert_allclose(
        losses.self_adaptive_update(targets, probs), [[0.92, 0.05, 0.03]], rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.self_adaptive_update(targets, probs, momentum=0.0), probs, rtol=1e-6
    )
    grad = jax.grad(lambda p: losses.self_adaptive_update(targets, p).sum())(probs)
    np.testing.assert_array_equal(grad, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="momentum"):
        losses.self_adaptive_update(targets, probs, momentum=1.5)
    with pytest.raises(ValueError, match=r"\(1, 3\).*\(1, 2\)"):
        losses.self_adaptive_update(targets, probs[:, :2])


def test_self_adaptive_loss_equals_cross_entropy_for_one_hot_targets():
    logits = jax.random.normal(jax.random.key(4), (6, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2, 0])
    expected = -log_softmax(logits)[np.arange(6), labels].mean()
    value = losses.self_adaptive_loss(logits, jax.nn.one_hot(labels, 4))
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert float(value) == pytest.approx(
        float(losses.supervised_loss(logits, labels).mean()), rel=1e-6
    )


def test_self_adaptive_loss_hand_computed():
    logits = jnp.array([[0.0, 0.0], [2.0, 0.0]])
    targets = jnp.array([[0.6, 0.4], [1.0, 0.0]])
    # w = [0.6, 1]; row 0 is uniform, so its cross-entropy is log 2.
    ce_1 = -math.log(math.exp(2) / (math.exp(2) + 1))
    expected = (0.6 * math.log(2) + 1.0 * ce_1) / 1.6
    assert float(losses.self_adaptive_loss(logits, targets)) == pytest.approx(expected, rel=1e-6)


def test_self_adaptive_loss_weights_down_low_confidence_examples():
    # d L / d z_i = w_i / sum(w) * (softmax(z_i) - t_i); targets get no gradient.
    logits = jnp.array([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.0]])
    targets = jnp.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.0, 1.0, 0.0]])
    t = np.asarray(targets, np.float64)
    weights = t.max(-1)
    expected = weights[:, None] / weights.sum() * (np.exp(log_softmax(logits)) - t)
    grad_z, grad_t = jax.grad(losses.self_adaptive_loss, argnums=(0, 1))(logits, targets)
    np.testing.assert_allclose(grad_z, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(grad_t, np.zeros((3, 3)))
    # The ambiguous example (row 1) counts less than in the plain mean cross-entropy.
    ce = -(t * log_softmax(logits)).sum(-1)
    value = float(losses.self_adaptive_loss(logits, targets))
    assert value == pytest.approx((weights * ce).sum() / weights.sum(), rel=1e-6)
    assert ce[1] > ce.mean() and value < ce.mean()


def test_self_adaptive_loss_where_masks_padding():
    logits = jax.random.normal(jax.random.key(5), (4, 3))
    targets = jax.nn.softmax(jax.random.normal(jax.random.key(6), (4, 3)) * 4)
    padded_logits = jnp.concatenate([logits, jnp.full((2, 3), 1e4)])
    padded_targets = jnp.concatenate([targets, jnp.full((2, 3), jnp.nan)])
    where = jnp.array([True] * 4 + [False] * 2)
    value_and_grad = jax.jit(jax.value_and_grad(losses.self_adaptive_loss))
    reference, reference_grad = value_and_grad(logits, targets)
    masked, grad = value_and_grad(padded_logits, padded_targets, where=where)
    assert float(masked) == pytest.approx(float(reference), rel=1e-6)
    np.testing.assert_array_equal(grad[4:], np.zeros((2, 3)))
    np.testing.assert_allclose(grad[:4], reference_grad, rtol=1e-6)
    nothing = losses.self_adaptive_loss(logits, targets, where=jnp.zeros(4, bool))
    assert float(nothing) == 0.0


def test_self_adaptive_loss_jit_finite_gradient_and_errors():
    logits = jnp.array([[100.0, -100.0], [-100.0, 100.0], [0.0, 0.0]])
    one_hot = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    value, grad = jax.jit(jax.value_and_grad(losses.self_adaptive_loss))(logits, one_hot)
    assert float(value) == pytest.approx(float(losses.self_adaptive_loss(logits, one_hot)))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 3\)"):
        losses.self_adaptive_loss(logits, jnp.ones((3, 3)))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        losses.self_adaptive_loss(logits, one_hot, where=jnp.ones(2, bool))


# ---------------------------------------------------------------- MIO


def test_mio_loss_hand_computed():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 1.0], [0.0, 1.0]])
    z_a = a / np.linalg.norm(a, axis=1, keepdims=True)
    z_b = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = z_a @ z_b.T  # [[1/sqrt2, 0], [1/sqrt2, 1]]
    positives = np.diag(s)
    negatives = s[~np.eye(2, dtype=bool)]
    expected = (
        softplus(-positives / 0.5).mean()
        + softplus(negatives / 0.25).mean()
        + 0.5 * ((z_a - z_b) ** 2).sum(-1).mean()
    )
    loss, aux = losses.mio_loss(a, b, tau_positive=0.5, tau_negative=0.25, l2_weight=0.5)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(aux["positive_similarity"]) == pytest.approx((1 / math.sqrt(2) + 1) / 2, 1e-6)
    assert float(aux["negative_similarity"]) == pytest.approx(1 / (2 * math.sqrt(2)), 1e-6)


def test_mio_identical_views_beat_shuffled_ones():
    views = jax.random.normal(jax.random.key(7), (16, 8))
    mio = jax.jit(losses.mio_loss)
    matched, matched_aux = mio(views, views)
    shuffled, shuffled_aux = mio(views, jnp.roll(views, 1, axis=0))
    assert float(matched) < float(shuffled)
    assert float(matched_aux["positive_similarity"]) == pytest.approx(1.0, abs=1e-5)
    assert float(shuffled_aux["positive_similarity"]) < 0.9


def test_mio_is_invariant_to_the_scale_of_the_embeddings():
    a = jax.random.normal(jax.random.key(8), (6, 4))
    b = jax.random.normal(jax.random.key(9), (6, 4))
    mio = jax.jit(losses.mio_loss)
    np.testing.assert_allclose(mio(3.0 * a, 0.5 * b)[0], mio(a, b)[0], rtol=1e-5)


def test_mio_zero_embeddings_give_finite_value_and_gradient():
    a = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
    b = jnp.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    (loss, aux), grads = jax.jit(jax.value_and_grad(losses.mio_loss, argnums=(0, 1), has_aux=True))(
        a, b
    )
    assert np.isfinite(loss) and all(np.isfinite(v) for v in aux.values())
    assert all(np.all(np.isfinite(g)) for g in grads)
    # A zero vector normalises to zero: only row 2 has a non-zero positive similarity.
    assert float(aux["positive_similarity"]) == pytest.approx(2 / math.sqrt(6) / 3, rel=1e-5)


def test_mio_where_masks_anchors_and_negatives():
    a = jax.random.normal(jax.random.key(10), (5, 4))
    b = a + 0.5 * jax.random.normal(jax.random.key(11), (5, 4))
    where = jnp.array([True] * 5 + [False] * 3)
    padded_a = jnp.concatenate([a, jnp.full((3, 4), 7.0)])
    padded_b = jnp.concatenate([b, -jnp.ones((3, 4))])

    @jax.jit
    def value_and_grad(a, b, where=None):
        return jax.value_and_grad(
            lambda a, b: losses.mio_loss(a, b, where=where), argnums=(0, 1), has_aux=True
        )(a, b)

    (reference, ref_aux), ref_grads = value_and_grad(a, b)
    (masked, aux), grads = value_and_grad(padded_a, padded_b, where)
    assert float(masked) == pytest.approx(float(reference), rel=1e-6)
    for key in ref_aux:
        assert float(aux[key]) == pytest.approx(float(ref_aux[key]), rel=1e-5, abs=1e-7)
    for grad, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(grad[:5], ref, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(grad[5:], np.zeros((3, 4)))
    # Non-finite padding does not leak into the real rows' values or gradients.
    nan_a = padded_a.at[5:].set(jnp.nan)
    (nan_loss, _), nan_grads = value_and_grad(nan_a, padded_b, where)
    assert float(nan_loss) == pytest.approx(float(reference), rel=1e-6)
    np.testing.assert_allclose(nan_grads[0][:5], ref_grads[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nan_grads[1][:5], ref_grads[1], rtol=1e-5, atol=1e-7)


def test_mio_single_example_has_no_negatives():
    loss, aux = losses.mio_loss(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]]), l2_weight=0.0)
    assert float(loss) == pytest.approx(softplus(0.0), rel=1e-6)
    assert float(aux["negative_similarity"]) == 0.0


def test_mio_same_value_under_jit_and_errors():
    a = jax.random.normal(jax.random.key(12), (6, 4))
    b = jax.random.normal(jax.random.key(13), (6, 4))
    jitted, jitted_aux = jax.jit(losses.mio_loss)(a, b)
    eager, eager_aux = losses.mio_loss(a, b)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    for key in eager_aux:
        np.testing.assert_allclose(jitted_aux[key], eager_aux[key], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"\(6, 4\).*\(6, 3\)"):
        losses.mio_loss(a, b[:, :3])
    with pytest.raises(ValueError, match="rank 2"):
        losses.mio_loss(a[0], b[0])
    with pytest.raises(ValueError, match="tau_negative"):
        losses.mio_loss(a, b, tau_negative=0.0)
    with pytest.raises(ValueError, match=r"\(6,\)"):
        losses.mio_loss(a, b, where=jnp.ones(5, bool))


# ---------------------------------------------------------------- sharded == single device


# Uneven per-device counts, so a per-device mean would differ from the global one.
WHERE = jnp.arange(32) % 5 != 0


def sat_inputs():
    logits = jax.random.normal(jax.random.key(15), (32, 5))
    targets = jax.nn.softmax(3 * jax.random.normal(jax.random.key(16), (32, 5)))
    return logits, targets, WHERE


def sat_objective(logits, targets, where, axis_name=None):
    return losses.self_adaptive_loss(logits, targets, where=where, axis_name=axis_name)


def mio_inputs():
    a = jax.random.normal(jax.random.key(17), (32, 6))
    b = a + 0.7 * jax.random.normal(jax.random.key(18), (32, 6))
    return a, b, WHERE


def mio_objective(a, b, where, axis_name=None):
    return losses.mio_loss(a, b, tau_negative=0.2, where=where, axis_name=axis_name)


mio_value_and_grad = jax.value_and_grad(mio_objective, argnums=(0, 1), has_aux=True)


def test_homeostasis_update_axis_name_equals_single_device(mesh):
    outputs = jax.random.normal(jax.random.key(14), (32, 4)) + jnp.array([0.5, 0.0, 0.0, 0.0])
    targets = losses.kwta_targets(outputs, jnp.zeros(4))
    thresholds = jnp.array([0.1, 0.0, -0.1, 0.05])
    single = losses.homeostasis_update(thresholds, targets, rate=0.5, where=WHERE)
    mapped = jax.jit(
        jax.shard_map(
            lambda h, y, w: losses.homeostasis_update(h, y, rate=0.5, where=w, axis_name="data"),
            mesh=mesh,
            in_specs=(P(), P("data"), P("data")),
            out_specs=P(),
        )
    )
    sharded = mapped(thresholds, *shard((targets, WHERE), mesh))
    np.testing.assert_allclose(sharded, single, rtol=1e-6, atol=1e-7)


def test_self_adaptive_loss_axis_name_equals_single_device(mesh):
    single, single_grad = jax.jit(jax.value_and_grad(sat_objective))(*sat_inputs())
    mapped = jax.jit(
        jax.shard_map(
            lambda z, t, w: sat_objective(z, t, w, axis_name="data"),
            mesh=mesh,
            in_specs=P("data"),
            out_specs=P(),
        )
    )
    sharded, sharded_grad = jax.value_and_grad(mapped)(*shard(sat_inputs(), mesh))
    np.testing.assert_allclose(sharded, single, rtol=1e-6)
    np.testing.assert_allclose(sharded_grad, single_grad, rtol=1e-5, atol=1e-8)


def test_self_adaptive_loss_global_view_jit_equals_single_device(global_mesh):
    single = sat_objective(*sat_inputs())
    sharded = jax.jit(sat_objective)(*shard(sat_inputs(), global_mesh))
    np.testing.assert_allclose(sharded, single, rtol=1e-6)


def test_mio_loss_axis_name_equals_single_device(mesh):
    (single, single_aux), single_grads = jax.jit(mio_value_and_grad)(*mio_inputs())
    mapped = jax.jit(
        jax.shard_map(
            lambda a, b, w: mio_objective(a, b, w, axis_name="data"),
            mesh=mesh,
            in_specs=P("data"),
            out_specs=P(),
        )
    )
    inputs = shard(mio_inputs(), mesh)
    (sharded, aux), grads = jax.value_and_grad(mapped, argnums=(0, 1), has_aux=True)(*inputs)
    np.testing.assert_allclose(sharded, single, rtol=1e-5)
    for key in single_aux:
        np.testing.assert_allclose(aux[key], single_aux[key], rtol=1e-5, atol=1e-7)
    for grad, ref in zip(grads, single_grads):
        np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-7)
    # Negatives drawn only from each device's own slice would give another value.
    slices = zip(*(jnp.split(v, NUM_DEVICES) for v in mio_inputs()))
    per_device = np.mean([jax.jit(mio_objective)(a, b, w)[0] for a, b, w in slices])
    assert abs(float(per_device) - float(single)) > 1e-3


def test_mio_loss_global_view_jit_equals_single_device(global_mesh):
    (single, single_aux), single_grads = jax.jit(mio_value_and_grad)(*mio_inputs())
    (sharded, aux), grads = jax.jit(mio_value_and_grad)(*shard(mio_inputs(), global_mesh))
    np.testing.assert_allclose(sharded, single, rtol=1e-5)
    for key in single_aux:
        np.testing.assert_allclose(aux[key], single_aux[key], rtol=1e-5, atol=1e-7)
    for grad, ref in zip(grads, single_grads):
        np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-7)
