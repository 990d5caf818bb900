"""Math of the MUSCLE loss terms: hand-computed values, invariants, gradients."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muscle_jax import losses
from muscle_jax.losses import _mutual_information

# Two examples, two classes, worked by hand:
#   a[0] (x) b[0] = [[.48, .32], [.12, .08]],  a[1] (x) b[1] = [[.04, .36], [.06, .54]]
#   mean = [[.26, .34], [.09, .31]] -> symmetrised P = [[.26, .215], [.215, .31]]
#   P_i = P_j = [.475, .525]
#   MI = .26 log(.26/.475^2) + 2 * .215 log(.215/(.475*.525)) + .31 log(.31/.525^2)
#      = .0368706 - .0637780 + .0364349 = 0.009527
HAND_A = np.array([[0.8, 0.2], [0.4, 0.6]])
HAND_B = np.array([[0.6, 0.4], [0.1, 0.9]])
HAND_JOINT = np.array([[0.26, 0.215], [0.215, 0.31]])
HAND_MI = 0.009527


def random_probs(seed, batch, num_classes, *, temperature=1.0):
    logits = jax.random.normal(jax.random.key(seed), (batch, num_classes)) / temperature
    return jax.nn.softmax(logits)


# ---------------------------------------------------------------- mutual information


def test_joint_distribution_hand_computed():
    np.testing.assert_allclose(losses.joint_distribution(HAND_A, HAND_B), HAND_JOINT, atol=1e-6)


def test_mutual_information_hand_computed():
    assert float(losses.mutual_information(HAND_A, HAND_B)) == pytest.approx(HAND_MI, abs=1e-5)
    assert float(losses.mutual_information_loss(HAND_A, HAND_B)) == pytest.approx(
        -HAND_MI, abs=1e-5
    )


@pytest.mark.parametrize("num_classes", [2, 3, 10, 100])
def test_identical_balanced_one_hot_gives_log_c(num_classes):
    one_hot = jax.nn.one_hot(jnp.arange(4 * num_classes) % num_classes, num_classes)
    mi = losses.mutual_information(one_hot, one_hot)
    assert float(mi) == pytest.approx(math.log(num_classes), rel=1e-5)


@pytest.mark.parametrize("num_classes", [2, 5, 10])
def test_independent_assignments_give_zero(num_classes):
    # Every (class_a, class_b) pair appears once: the joint factorises.
    ids = jnp.arange(num_classes * num_classes)
    view_a = jax.nn.one_hot(ids // num_classes, num_classes)
    view_b = jax.nn.one_hot(ids % num_classes, num_classes)
    assert float(losses.mutual_information(view_a, view_b)) == pytest.approx(0.0, abs=1e-6)


def test_uniform_predictions_give_zero():
    uniform = jnp.full((16, 7), 1 / 7)
    assert float(losses.mutual_information(uniform, uniform)) == pytest.approx(0.0, abs=1e-6)


def test_symmetry():
    a, b = random_probs(0, 32, 6), random_probs(1, 32, 6)
    np.testing.assert_allclose(
        losses.mutual_information(a, b), losses.mutual_information(b, a), rtol=1e-6
    )


@pytest.mark.parametrize("seed", range(5))
def test_bounds(seed):
    num_classes = 3 + seed
    a = random_probs(seed, 20, num_classes, temperature=0.3)
    b = random_probs(seed + 100, 20, num_classes, temperature=0.3)
    mi = float(losses.mutual_information(a, b))
    assert -1e-6 <= mi <= math.log(num_classes) + 1e-6


def test_invariant_to_a_permutation_of_classes():
    a, b = random_probs(2, 24, 5), random_probs(3, 24, 5)
    permutation = jnp.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(
        losses.mutual_information(a[:, permutation], b[:, permutation]),
        losses.mutual_information(a, b),
        atol=1e-6,
    )


def test_invariant_to_a_permutation_of_examples():
    a, b = random_probs(4, 24, 5), random_probs(5, 24, 5)
    order = jax.random.permutation(jax.random.key(0), 24)
    np.testing.assert_allclose(
        losses.mutual_information(a[order], b[order]), losses.mutual_information(a, b), atol=1e-6
    )


def test_lamb_weights_the_marginals():
    # For identical balanced one-hot views, log P_ij = log(1/C) on the diagonal, so
    # MI_lamb = (2 lamb - 1) log C.
    one_hot = jnp.eye(4)
    for lamb in (1.0, 1.5, 2.0):
        mi = losses.mutual_information(one_hot, one_hot, lamb=lamb)
        assert float(mi) == pytest.approx((2 * lamb - 1) * math.log(4), rel=1e-5)


def test_rows_need_not_sum_to_one_documented_behaviour():
    # The joint is renormalised, so scaling every row by the same factor changes nothing.
    a, b = random_probs(6, 10, 3), random_probs(7, 10, 3)
    np.testing.assert_allclose(
        losses.mutual_information(3.0 * a, 3.0 * b), losses.mutual_information(a, b), atol=1e-6
    )


def test_nan_input_gives_nan_documented_behaviour():
    a = random_probs(8, 10, 3).at[0, 0].set(jnp.nan)
    assert math.isnan(float(losses.mutual_information(a, a)))


def test_finite_value_and_gradient_for_one_hot_and_empty_classes():
    # Class 3 is never predicted, and the inputs are exactly one-hot.
    one_hot = jax.nn.one_hot(jnp.array([0, 1, 2, 0, 1, 2]), 4)
    value, (grad_a, grad_b) = jax.value_and_grad(
        lambda a, b: losses.mutual_information_loss(a, b), argnums=(0, 1)
    )(one_hot, one_hot)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad_a)) and np.all(np.isfinite(grad_b))


def test_default_eps_is_iics_python_float_epsilon():
    # IIC's IID_loss clamps at sys.float_info.epsilon (float64 epsilon, ~2.2e-16),
    # not at float32 epsilon (~1.19e-7).
    assert _mutual_information.EPS == sys.float_info.epsilon
    assert np.float32(_mutual_information.EPS) > np.finfo(np.float32).tiny  # a normal float32
    # Near one-hot views whose joint has off-diagonal entries in (2.2e-16, 1.19e-7):
    # the default leaves them unclamped, float32 epsilon would clamp them.
    logits = 20.0 * jax.nn.one_hot(jnp.arange(8) % 4, 4)
    probs = jax.nn.softmax(logits)
    joint = losses.joint_distribution(probs, probs)
    off_diagonal = joint[~np.eye(4, dtype=bool)]
    assert np.all(off_diagonal > sys.float_info.epsilon)
    assert np.all(off_diagonal < np.finfo(np.float32).eps)

    def grad(eps):
        return jax.grad(
            lambda z: losses.mutual_information_loss(*(jax.nn.softmax(z),) * 2, eps=eps)
        )(logits)

    unclamped = grad(float(np.finfo(np.float32).tiny))
    np.testing.assert_array_equal(grad(None), grad(sys.float_info.epsilon))
    np.testing.assert_allclose(grad(None), unclamped, rtol=1e-5, atol=0)
    assert not np.allclose(grad(float(np.finfo(np.float32).eps)), unclamped, rtol=1e-2, atol=0)


@pytest.mark.parametrize("loss_fn", [losses.mutual_information_loss, losses.mutual_information])
def test_finite_gradient_for_one_hot_and_all_zero_columns_at_default_eps(loss_fn):
    # Exactly one-hot rows; columns 3 and 4 are all zero in both views, and
    # column 2 is zero in view B only.
    a = jax.nn.one_hot(jnp.array([0, 1, 2, 0, 1, 2]), 5)
    b = jax.nn.one_hot(jnp.array([0, 1, 0, 0, 1, 1]), 5)
    value, (grad_a, grad_b) = jax.value_and_grad(loss_fn, argnums=(0, 1))(a, b)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad_a)) and np.all(np.isfinite(grad_b))
    # Same through a saturated softmax, where probabilities underflow to 0.
    logits = 200.0 * a - 100.0
    grad_logits = jax.grad(lambda z: loss_fn(jax.nn.softmax(z), b))(logits)
    assert np.all(np.isfinite(grad_logits))


def test_finite_gradient_through_saturated_softmax():
    logits = jnp.array([[100.0, -100.0, -100.0], [-100.0, 100.0, -100.0]])

    def loss(logits):
        probs = jax.nn.softmax(logits)
        return losses.mutual_information_loss(probs, probs)

    assert np.all(np.isfinite(jax.grad(loss)(logits)))


def test_gradient_matches_finite_differences():
    logits_a = jax.random.normal(jax.random.key(9), (6, 3))
    logits_b = jax.random.normal(jax.random.key(10), (6, 3))

    def loss(la):
        return losses.mutual_information_loss(jax.nn.softmax(la), jax.nn.softmax(logits_b))

    grad = jax.grad(loss)(logits_a)
    direction = jax.random.normal(jax.random.key(11), logits_a.shape)
    step = 1e-2
    numeric = (loss(logits_a + step * direction) - loss(logits_a - step * direction)) / (2 * step)
    assert float(jnp.vdot(grad, direction)) == pytest.approx(float(numeric), rel=2e-2, abs=1e-4)


def test_same_value_under_jit():
    a, b = random_probs(12, 16, 4), random_probs(13, 16, 4)
    np.testing.assert_allclose(
        jax.jit(losses.mutual_information)(a, b), losses.mutual_information(a, b), atol=1e-6
    )


def test_bf16_inputs_are_computed_in_float32():
    a, b = random_probs(14, 16, 4), random_probs(15, 16, 4)
    mi = losses.mutual_information(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    assert mi.dtype == jnp.float32
    assert float(mi) == pytest.approx(float(losses.mutual_information(a, b)), abs=1e-2)


def test_multi_head_is_mean_over_heads():
    heads_a = jnp.stack([random_probs(s, 12, 15) for s in range(3)])
    heads_b = jnp.stack([random_probs(s + 10, 12, 15) for s in range(3)])
    expected = np.mean([losses.mutual_information(a, b) for a, b in zip(heads_a, heads_b)])
    np.testing.assert_allclose(
        losses.multi_head_mutual_information(heads_a, heads_b), expected, rtol=1e-5
    )


@pytest.mark.parametrize(
    ("shape_a", "shape_b", "fragment"),
    [
        ((8, 3), (8, 4), "(8, 3)"),
        ((8, 3), (7, 3), "(7, 3)"),
        ((8,), (8,), "rank 2"),
        ((8, 1), (8, 1), "at least 2 classes"),
        ((2, 8, 3), (2, 8, 3), "(2, 8, 3)"),
    ],
)
def test_bad_shapes_raise_value_error_naming_them(shape_a, shape_b, fragment):
    with pytest.raises(ValueError, match=r".*") as info:
        losses.mutual_information(jnp.ones(shape_a), jnp.ones(shape_b))
    assert fragment in str(info.value)


def test_multi_head_rejects_rank_2():
    with pytest.raises(ValueError, match=r"\[heads, batch, num_outputs\]"):
        losses.multi_head_mutual_information(jnp.eye(3), jnp.eye(3))


# ---------------------------------------------------------------- supervised


def test_supervised_loss_hand_computed():
    logits = jnp.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    expected = [math.log(3), -math.log(math.exp(2) / (math.exp(2) + 2))]
    np.testing.assert_allclose(losses.supervised_loss(logits, jnp.array([1, 0])), expected, 1e-6)


def test_supervised_loss_label_smoothing():
    # Targets [0.9, 0.1] against logits [1, 0]: -(0.9 log s0 + 0.1 log s1).
    s0 = math.exp(1) / (math.exp(1) + 1)
    expected = -(0.9 * math.log(s0) + 0.1 * math.log(1 - s0))
    value = losses.supervised_loss(jnp.array([[1.0, 0.0]]), jnp.array([0]), label_smoothing=0.2)
    assert float(value[0]) == pytest.approx(expected, rel=1e-6)


def test_supervised_loss_soft_targets_equal_one_hot_labels():
    logits = jax.random.normal(jax.random.key(0), (5, 4))
    labels = jnp.array([0, 3, 2, 1, 3])
    np.testing.assert_allclose(
        losses.supervised_loss(logits, jax.nn.one_hot(labels, 4)),
        losses.supervised_loss(logits, labels),
        rtol=1e-6,
    )


def test_supervised_loss_where_zeroes_masked_examples_and_their_gradient():
    logits = jax.random.normal(jax.random.key(1), (4, 3))
    where = jnp.array([True, False, True, False])
    values = losses.supervised_loss(logits, jnp.array([0, 1, 2, 0]), where=where)
    assert values[1] == 0 and values[3] == 0 and values[0] > 0
    grad = jax.grad(lambda z: losses.supervised_loss(z, jnp.array([0, 1, 2, 0]), where=where).sum())
    assert np.all(np.asarray(grad(logits))[~np.asarray(where)] == 0)


@pytest.mark.parametrize(
    ("labels_shape", "where_shape", "fragment"),
    [((3,), None, "(3,)"), ((4, 2), None, "(4, 2)"), ((4,), (3,), "(3,)")],
)
def test_supervised_loss_shape_errors(labels_shape, where_shape, fragment):
    where = None if where_shape is None else jnp.ones(where_shape, bool)
    with pytest.raises(ValueError) as info:
        losses.supervised_loss(jnp.zeros((4, 3)), jnp.zeros(labels_shape, jnp.int32), where=where)
    assert fragment in str(info.value)


def test_supervised_loss_rejects_bad_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.supervised_loss(jnp.zeros((2, 3)), jnp.array([0, 1]), label_smoothing=1.0)


# ---------------------------------------------------------------- consistency


def test_fixmatch_masks_unconfident_examples():
    weak = jnp.array([[5.0, 0.0], [0.2, 0.0], [0.0, 5.0]])
    strong = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    per_example, mask = losses.fixmatch_consistency(strong, weak, threshold=0.95)
    np.testing.assert_array_equal(mask, [1.0, 0.0, 1.0])
    log_s0 = math.log(math.exp(1) / (math.exp(1) + 1))
    log_s1 = math.log(1 / (math.exp(1) + 1))
    np.testing.assert_allclose(per_example, [-log_s0, 0.0, -log_s1], rtol=1e-6)


def test_fixmatch_threshold_zero_keeps_everything():
    logits = jax.random.normal(jax.random.key(2), (6, 3))
    _, mask = losses.fixmatch_consistency(logits, logits, threshold=0.0)
    assert float(mask.sum()) == 6


def test_fixmatch_no_gradient_through_weak_view():
    weak = jnp.array([[5.0, 0.0], [0.0, 5.0]])
    strong = jnp.array([[0.3, 0.1], [0.2, 0.4]])
    grad_weak = jax.grad(lambda w: losses.fixmatch_consistency(strong, w)[0].sum())(weak)
    grad_strong = jax.grad(lambda s: losses.fixmatch_consistency(s, weak)[0].sum())(strong)
    assert np.all(grad_weak == 0) and np.any(grad_strong != 0)


def test_mse_consistency_value_and_stop_gradient():
    student = jnp.array([[0.5, 0.5], [1.0, 0.0]])
    target = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(losses.mse_consistency(student, target), [0.25, 0.0])
    grad_target = jax.grad(lambda t: losses.mse_consistency(student, t).sum())(target)
    assert np.all(grad_target == 0)


def test_sharpen():
    probs = random_probs(3, 5, 4)
    np.testing.assert_allclose(losses.sharpen(probs, temperature=1.0), probs, rtol=1e-5)
    sharp = losses.sharpen(probs, temperature=0.01)
    np.testing.assert_allclose(sharp.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(jnp.argmax(sharp, -1), jnp.argmax(probs, -1))
    assert float(sharp.max(-1).min()) > 0.99
    with pytest.raises(ValueError, match="temperature"):
        losses.sharpen(probs, temperature=0.0)


def test_mixup_is_a_convex_combination_leaning_to_its_own_example():
    key = jax.random.key(4)
    inputs = jnp.arange(8.0).reshape(8, 1)
    targets = jax.nn.one_hot(jnp.arange(8) % 4, 4)
    mixed_x, mixed_y, lam = losses.mixup(key, inputs, targets)
    assert lam.shape == (8,) and bool(jnp.all(lam >= 0.5)) and bool(jnp.all(lam <= 1.0))
    np.testing.assert_allclose(mixed_y.sum(-1), 1.0, rtol=1e-6)
    # Each example keeps at least half of its own target mass.
    assert bool(jnp.all(jnp.sum(mixed_y * targets, -1) >= 0.5 - 1e-6))
    again = losses.mixup(key, inputs, targets)
    np.testing.assert_array_equal(again[0], mixed_x)
    with pytest.raises(ValueError, match=r"\(8, 1\)"):
        losses.mixup(key, inputs, targets[:4])


# ---------------------------------------------------------------- schedules


def test_rampup_values():
    assert float(losses.rampup(0, rampup_steps=100, kind="none")) == 1.0
    assert float(losses.rampup(25, rampup_steps=100, kind="linear")) == pytest.approx(0.25)
    assert float(losses.rampup(200, rampup_steps=100, kind="linear")) == 1.0
    assert float(losses.rampup(0, rampup_steps=100, kind="sigmoid")) == pytest.approx(math.exp(-5))
    assert float(losses.rampup(50, rampup_steps=100, kind="sigmoid")) == pytest.approx(
        math.exp(-5 * 0.25)
    )
    assert float(losses.rampup(100, rampup_steps=100, kind="sigmoid")) == 1.0
    assert float(losses.rampup(0, rampup_steps=0, kind="sigmoid")) == 1.0
    assert float(losses.term_weight(50, max_weight=3.0, rampup_steps=100, kind="linear")) == 1.5


def test_rampup_traced_step_and_errors():
    ramp = jax.jit(lambda s: losses.rampup(s, rampup_steps=10, kind="linear"))
    assert float(ramp(jnp.asarray(5))) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'cosine'"):
        losses.rampup(0, rampup_steps=10, kind="cosine")
    with pytest.raises(ValueError, match="-1"):
        losses.rampup(0, rampup_steps=-1)


# ---------------------------------------------------------------- muscle_loss


def make_views(seed=0, labeled=4, unlabeled=12, num_classes=5):
    keys = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(keys[0], (labeled, num_classes)),
        jnp.arange(labeled) % num_classes,
        2 * jax.random.normal(keys[1], (unlabeled, num_classes)),
        2 * jax.random.normal(keys[2], (unlabeled, num_classes)),
    )


@pytest.mark.parametrize("consistency", ["fixmatch", "mse", "none"])
def test_muscle_loss_combines_the_terms(consistency):
    labeled, labels, view_a, view_b = make_views()
    total, aux = losses.muscle_loss(
        labeled,
        labels,
        view_a,
        view_b,
        consistency=consistency,
        supervised_weight=0.5,
        consistency_weight=2.0,
        mutual_information_weight=3.0,
        threshold=0.5,
    )
    expected_sup = float(losses.supervised_loss(labeled, labels).mean())
    expected_mi = float(losses.mutual_information(jax.nn.softmax(view_a), jax.nn.softmax(view_b)))
    assert float(aux["supervised"]) == pytest.approx(expected_sup, rel=1e-6)
    assert float(aux["mutual_information"]) == pytest.approx(expected_mi, rel=1e-6)
    assert float(total) == pytest.approx(
        0.5 * expected_sup + 2.0 * float(aux["consistency"]) - 3.0 * expected_mi, rel=1e-5
    )
    assert ("mask_rate" in aux) == (consistency == "fixmatch")
    if consistency == "none":
        assert float(aux["consistency"]) == 0.0


def test_muscle_loss_fixmatch_consistency_is_mean_over_all_unlabeled():
    labeled, labels, view_a, view_b = make_views(1)
    _, aux = losses.muscle_loss(labeled, labels, view_a, view_b, threshold=0.6)
    per_example, mask = losses.fixmatch_consistency(view_b, view_a, threshold=0.6)
    assert float(aux["consistency"]) == pytest.approx(float(per_example.mean()), rel=1e-6)
    assert float(aux["mask_rate"]) == pytest.approx(float(mask.mean()))


def test_muscle_loss_mean_teacher_and_mixmatch_use_given_targets():
    labeled, labels, view_a, view_b = make_views(2)
    teacher = random_probs(20, 12, 5)
    _, aux = losses.muscle_loss(
        labeled, labels, view_a, view_b, consistency="mean_teacher", consistency_targets=teacher
    )
    expected = losses.mse_consistency(jax.nn.softmax(view_b), teacher).mean()
    assert float(aux["consistency"]) == pytest.approx(float(expected), rel=1e-6)

    student = jax.random.normal(jax.random.key(21), (12, 5))
    soft_labels = jax.nn.one_hot(labels, 5) * 0.8 + 0.04
    _, aux = losses.muscle_loss(
        labeled,
        soft_labels,
        view_a,
        view_b,
        consistency="mixmatch",
        consistency_targets=teacher,
        student_logits=student,
    )
    expected = losses.mse_consistency(jax.nn.softmax(student), teacher).mean()
    assert float(aux["consistency"]) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="consistency_targets"):
        losses.muscle_loss(labeled, labels, view_a, view_b, consistency="mean_teacher")


def test_muscle_loss_masks_padding_rows():
    labeled, labels, view_a, view_b = make_views(3)
    pad = jnp.zeros((4, 5))
    where = jnp.concatenate([jnp.ones(12, bool), jnp.zeros(4, bool)])
    for consistency in ("fixmatch", "mse"):
        reference, ref_aux = losses.muscle_loss(
            labeled, labels, view_a, view_b, consistency=consistency, threshold=0.5
        )
        padded, aux = losses.muscle_loss(
            labeled,
            labels,
            jnp.concatenate([view_a, pad + 9.0]),
            jnp.concatenate([view_b, pad]),
            consistency=consistency,
            threshold=0.5,
            unlabeled_where=where,
        )
        assert float(padded) == pytest.approx(float(reference), rel=1e-5)
        for key in ref_aux:
            assert float(aux[key]) == pytest.approx(float(ref_aux[key]), rel=1e-5, abs=1e-7)


def test_muscle_loss_mi_probs_override():
    labeled, labels, view_a, view_b = make_views(4)
    probs = (random_probs(30, 8, 5), random_probs(31, 8, 5))
    _, aux = losses.muscle_loss(labeled, labels, view_a, view_b, mi_probs=probs)
    assert float(aux["mutual_information"]) == pytest.approx(
        float(losses.mutual_information(*probs)), rel=1e-6
    )


def test_muscle_loss_traced_weights_and_gradient_are_finite():
    labeled, labels, view_a, view_b = make_views(5)

    @jax.jit
    def loss(params, step):
        weight = losses.term_weight(step, max_weight=1.0, rampup_steps=10)
        return losses.muscle_loss(
            params[0], labels, params[1], params[2], mutual_information_weight=weight
        )[0]

    value, grads = jax.value_and_grad(loss)((labeled, view_a, view_b), jnp.asarray(3))
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_muscle_loss_errors():
    labeled, labels, view_a, view_b = make_views(6)
    with pytest.raises(ValueError, match="'vat'"):
        losses.muscle_loss(labeled, labels, view_a, view_b, consistency="vat")
    with pytest.raises(ValueError, match=r"\(12, 5\).*\(12, 4\)"):
        losses.muscle_loss(labeled, labels, view_a, view_b[:, :4])
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(12, 5\)"):
        losses.muscle_loss(labeled[:, :3], labels, view_a, view_b)


# ---------------------------------------------------------------- packaging


@pytest.mark.slow
def test_losses_import_no_tensorflow_orbax_or_trainer():
    code = (
        "import sys, muscle_jax.losses\n"
        "heavy = [m for m in ('tensorflow', 'orbax', 'flax', 'muscle_jax.train') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
