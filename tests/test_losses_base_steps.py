"""The modern bases' composed steps: the order each reference runs its pieces in, by hand.

The pieces are tested in test_losses_bases_thresholds.py and
test_losses_bases_alignment.py; here only what the composition decides:
which state a step's mask reads (before or after this batch's update) and
what the step returns. Expected values are worked out in the comments.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muscle_jax import losses


def _logits(probs) -> jnp.ndarray:
    return jnp.log(jnp.asarray(probs, jnp.float32))


def test_flexmatch_masks_with_the_record_from_before_the_batch():
    # An empty record with warm-up: beta = 0 for every class, threshold tau * M(0) = 0,
    # so both images pass although only the first is confident (0.96 >= 0.95).
    weak = _logits([[0.96, 0.04], [0.6, 0.4]])
    strong = _logits([[0.5, 0.5], [0.5, 0.5]])
    state = {"selected": losses.flexmatch_init(4)}
    loss, metrics, new_state = losses.flexmatch_step(
        weak, strong, state, jnp.array([2, 0]), threshold=0.95
    )
    assert float(metrics["mask_rate"]) == 1.0
    # Both pseudo-labels are class 0; CE of a uniform strong view = log 2 each.
    assert float(loss) == pytest.approx(math.log(2), rel=1e-5)
    # Only the confident image (id 2) is written, with the FIXED tau 0.95.
    np.testing.assert_array_equal(new_state["selected"], [-1, -1, 0, -1])


def test_freematch_masks_with_the_thresholds_updated_from_the_batch():
    # momentum 0: tau = mean confidence (0.9 + 0.6) / 2 = 0.75; p_tilde = mean probs
    # [0.75, 0.25], max 0.75, so class 0's threshold is 0.75 * 0.75 / 0.75 = 0.75.
    # Image 1 (0.9 >= 0.75) passes, image 2 (0.6) does not. The initial tau (1/2)
    # would have passed both.
    weak = _logits([[0.9, 0.1], [0.6, 0.4]])
    strong = _logits([[0.5, 0.5], [0.5, 0.5]])
    loss, metrics, state = losses.freematch_step(
        weak, strong, losses.freematch_init(2), momentum=0.0, fairness_weight=0.0
    )
    assert float(metrics["mask_rate"]) == 0.5
    assert float(state["tau"]) == pytest.approx(0.75, rel=1e-6)
    assert float(metrics["threshold"]) == pytest.approx(0.75, rel=1e-6)
    # One masked CE of log 2, averaged over the batch of 2.
    assert float(loss) == pytest.approx(math.log(2) / 2, rel=1e-5)
    # Every pseudo-label is class 0: a = normalise(p_tilde / hist) = [1, 0], and
    # b = [1, 0] too, so the fairness term is 1 * log 1 = 0.
    assert float(metrics["fairness"]) == 0.0

    # Both classes pseudo-labelled: tau = (0.9 + 0.8) / 2 = 0.85, p_tilde [0.55, 0.45],
    # thresholds [0.85, 0.85 * 0.45 / 0.55 = 0.695]: both images pass; hist [0.5, 0.5],
    # a = normalise([1.1, 0.9]) = [0.55, 0.45]. The uniform strong views both argmax to
    # class 0: b = normalise([0.5 / 2, 0.5 / 0 -> 0]) = [1, 0], and
    # L_f = 0.55 log 1 + 0.45 log(0 + 1e-12) = 0.45 log 1e-12.
    weak = _logits([[0.9, 0.1], [0.2, 0.8]])
    loss, metrics, _ = losses.freematch_step(
        weak, strong, losses.freematch_init(2), momentum=0.0, fairness_weight=0.5
    )
    fairness = 0.45 * math.log(1e-12)
    assert float(metrics["mask_rate"]) == 1.0
    assert float(metrics["fairness"]) == pytest.approx(fairness, rel=1e-4)
    # L_u: both CEs are log 2; the fairness term enters with its weight.
    assert float(loss) == pytest.approx(math.log(2) + 0.5 * fairness, rel=1e-4)


def test_adamatch_aligns_with_the_state_updated_from_the_batch():
    # momentum 0: p_model = the batch mean [0.7, 0.3]; the labeled EMA target = the
    # labeled mean [0.5, 0.5]. Aligned: p * (0.5 / 0.7, 0.5 / 0.3) renormalised:
    # [0.9, 0.1] -> [0.643, 0.167] -> [0.794, 0.206];
    # [0.5, 0.5] -> [0.357, 0.833] -> [0.3, 0.7].
    weak = _logits([[0.9, 0.1], [0.5, 0.5]])
    labeled = _logits([[0.5, 0.5], [0.5, 0.5]])  # relative threshold 0.95 * 0.5 = 0.475
    strong = _logits([[0.5, 0.5], [0.5, 0.5]])
    loss, metrics, state = losses.adamatch_step(
        weak, strong, labeled, losses.distribution_alignment_init(2), momentum=0.0
    )
    np.testing.assert_allclose(state["p_model"], [0.7, 0.3], rtol=1e-5)
    np.testing.assert_allclose(state["p_target"], [0.5, 0.5], rtol=1e-5)
    # Both aligned maxima (0.794, 0.7) clear 0.475; the CE to either label is log 2.
    assert float(metrics["mask_rate"]) == 1.0
    assert float(loss) == pytest.approx(math.log(2), rel=1e-5)
    # Without the labeled EMA the target stays at its initial uniform value.
    _, _, fixed = losses.adamatch_step(
        weak,
        strong,
        _logits([[0.9, 0.1], [0.9, 0.1]]),
        losses.distribution_alignment_init(2),
        momentum=0.0,
        labeled_ema_target=False,
    )
    np.testing.assert_allclose(fixed["p_target"], [0.5, 0.5], rtol=1e-6)


def test_adamatch_p_model_start_flips_a_pseudo_label_on_the_first_and_second_step():
    # Weak batch mean [0.8, 0.2]; the labeled EMA target stays [0.5, 0.5] (its
    # batch is uniform), so tau_rel = 0.95 * 0.5 and every image is kept.
    weak = _logits([[0.95, 0.05], [0.65, 0.35]])
    labeled = _logits([[0.5, 0.5], [0.5, 0.5]])
    strong = _logits([[0.8, 0.2], [0.8, 0.2]])  # CE to class 0: -log 0.8; to 1: -log 0.2.
    to_0, to_1 = -math.log(0.8), -math.log(0.2)
    # USB's start (the default): p_model = [0.8, 0.2] at once, and stays there on the
    # same batch. Row 1: [0.65 / 0.8, 0.35 / 0.2] -> [0.317, 0.683]: class 1.
    state = losses.distribution_alignment_init(2)
    for step in range(2):
        loss, metrics, state = losses.adamatch_step(weak, strong, labeled, state, momentum=0.9)
        np.testing.assert_allclose(state["p_model"], [0.8, 0.2], rtol=1e-6, err_msg=str(step))
        assert float(metrics["mask_rate"]) == 1.0
        assert float(loss) == pytest.approx((to_0 + to_1) / 2, rel=1e-5)
    # The uniform start: p_model = 0.9 * 0.5 + 0.1 * [0.8, 0.2] = [0.53, 0.47], then
    # 0.9 * [0.53, 0.47] + 0.1 * [0.8, 0.2] = [0.557, 0.443]. Row 1: [0.65 / 0.53,
    # 0.35 / 0.47] -> [0.622, 0.378], then [0.596, 0.404]: class 0 both times.
    state = losses.distribution_alignment_init(2)
    for step, expected in enumerate(([0.53, 0.47], [0.557, 0.443])):
        loss, _, state = losses.adamatch_step(
            weak, strong, labeled, state, momentum=0.9, first_batch=False
        )
        np.testing.assert_allclose(state["p_model"], expected, rtol=1e-6, err_msg=str(step))
        assert float(loss) == pytest.approx(to_0, rel=1e-5)


def test_softmatch_step_passes_its_p_hat_start_on():
    # Batch mean [0.7, 0.3]; momentum 0.5: the first batch's mean, or 0.5 * 0.5 + 0.5 * mean.
    weak = _logits([[0.5, 0.5], [0.9, 0.1]])
    for first_batch, expected in ((True, [0.7, 0.3]), (False, [0.6, 0.4])):
        _, _, state = losses.softmatch_step(
            weak, weak, losses.softmatch_init(2), momentum=0.5, first_batch=first_batch
        )
        np.testing.assert_allclose(state["p_hat"], expected, rtol=1e-6)


def test_dash_sets_its_start_once_from_the_first_labeled_batch():
    # The labeled batch's mean CE: -log 0.8 for both images = 0.2231.
    labeled = _logits([[0.8, 0.2], [0.2, 0.8]])
    labels = jnp.array([0, 1])
    weak = _logits([[0.5, 0.5]])
    options = {"steps_per_decay": 10, "gamma": 2.0, "rho_min": 0.05, "temperature": 0.5}
    _, metrics, state = losses.dash_step(
        weak, weak, labeled, labels, losses.dash_init(), step=0, **options
    )
    start = -math.log(0.8)
    assert float(state["rho_init"]) == pytest.approx(start, rel=1e-5)
    assert bool(state["initialised"])
    assert float(metrics["threshold"]) == pytest.approx(1.0001 * start, rel=1e-5)
    # A later batch with another labeled loss keeps the start; step 10 halves it.
    _, later, kept = losses.dash_step(
        weak, weak, _logits([[0.5, 0.5], [0.5, 0.5]]), labels, state, step=10, **options
    )
    assert float(kept["rho_init"]) == pytest.approx(start, rel=1e-5)
    assert float(later["threshold"]) == pytest.approx(1.0001 * start / 2, rel=1e-5)


def test_dash_decay_follows_the_reference_share_of_the_run():
    # 10 x 1024 of 2^20 steps: 600 steps -> round(5.86) = 6; a given value wins.
    assert losses.dash_steps_per_decay(600) == 6
    assert losses.dash_steps_per_decay(2**20) == 10240
    assert losses.dash_steps_per_decay(10) == 1  # Never 0.
    assert losses.dash_steps_per_decay(600, decay_every_steps=50) == 50


def test_muscle_loss_refuses_a_stateful_base_without_its_inputs():
    logits = jnp.zeros((4, 3))
    labels = jnp.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="needs consistency_state"):
        losses.muscle_loss(logits, labels, logits, logits, consistency="freematch")
    with pytest.raises(ValueError, match="needs unlabeled_index"):
        losses.muscle_loss(
            logits,
            labels,
            logits,
            logits,
            consistency="flexmatch",
            consistency_state={"selected": losses.flexmatch_init(4)},
        )
    with pytest.raises(ValueError, match="without unlabeled_where or axis_name"):
        losses.muscle_loss(
            logits,
            labels,
            logits,
            logits,
            consistency="uda",
            consistency_state={},
            unlabeled_where=jnp.ones(4, bool),
        )


def test_debiased_pseudo_labels_are_adjusted_class_by_class_by_hand():
    # q_hat = (0.8, 0.2), tau 1: the weak view's argmax is class 0 (logits 0.5, 0), but
    # softmax(z - log q) = softmax(0.5 + 0.2231, 0 + 1.6094): class 1, p = 0.7081 >= 0.7.
    state = {"q_hat": jnp.array([0.8, 0.2])}
    weak, strong = jnp.array([[0.5, 0.0]]), jnp.array([[0.0, 0.0]])
    loss, metrics, new = losses.debiased_pseudo_label_step(
        weak, strong, state, tau=1.0, momentum=0.5, threshold=0.7
    )
    # q <- 0.5 q + 0.5 softmax(0.5, 0) = 0.5 (0.8, 0.2) + 0.5 (0.6224588, 0.3775412).
    np.testing.assert_allclose(new["q_hat"], [0.7112294, 0.2887706], atol=1e-6)
    # CE(0 + log q_new, 1) = -log(0.2887706 / (0.7112294 + 0.2887706)) = 1.242124.
    np.testing.assert_allclose(loss, 1.242124, atol=1e-6)
    assert float(metrics["mask_rate"]) == 1.0
    # USB's main branch since 2024 averages q_hat to one number: a uniform q shifts every
    # logit alike, so the pseudo-label stays class 0 and the loss is FixMatch's (here
    # masked: 0.6225 < 0.7).
    uniform = {"q_hat": jnp.full(2, 0.5)}
    usb_like, usb_metrics, _ = losses.debiased_pseudo_label_step(
        weak, strong, uniform, tau=1.0, momentum=0.5, threshold=0.7
    )
    assert float(usb_metrics["mask_rate"]) == 0.0 and float(usb_like) == 0.0
    assert float(loss) != float(usb_like)
    # tau 0 is FixMatch: the raw argmax and confidence, unadjusted logits.
    fixmatch, _, _ = losses.debiased_pseudo_label_step(
        weak, strong, state, tau=0.0, momentum=0.5, threshold=0.6
    )
    np.testing.assert_allclose(fixmatch, np.log(2.0), atol=1e-6)  # CE([0, 0], 0).


def test_debiased_usb_order_swaps_which_q_hat_the_pseudo_label_and_the_loss_read():
    # As above: q = (0.8, 0.2), tau 1, m 0.5, so q_new = (0.7112297, 0.2887703).
    state = {"q_hat": jnp.array([0.8, 0.2])}
    weak, strong = jnp.array([[0.5, 0.0]]), jnp.array([[0.0, 0.0]])
    options = {"tau": 1.0, "momentum": 0.5, "threshold": 0.55}
    # The paper's order: the label from q (class 1, p = 0.7081), the loss with q_new:
    # CE(log q_new, 1) = -log 0.2887703 = 1.242124.
    paper, _, paper_state = losses.debiased_pseudo_label_step(weak, strong, state, **options)
    np.testing.assert_allclose(paper, 1.242124, atol=1e-6)
    # USB's order: the label from q_new, softmax(0.5 - log 0.7112297, -log 0.2887703) =
    # (0.4010, 0.5990): class 1, kept at 0.55; the loss with the step-start q:
    # CE(log q, 1) = -log 0.2 = 1.609438.
    usb, metrics, usb_state = losses.debiased_pseudo_label_step(
        weak, strong, state, update_order="usb", **options
    )
    np.testing.assert_allclose(usb, 1.609438, atol=1e-6)
    assert float(metrics["mask_rate"]) == 1.0
    # The state moves the same way in both orders.
    np.testing.assert_array_equal(usb_state["q_hat"], paper_state["q_hat"])
    np.testing.assert_allclose(usb_state["q_hat"], [0.7112297, 0.2887703], atol=1e-6)
    # At threshold 0.65 USB's label (0.599) is dropped and the paper's (0.708) kept.
    strict = dict(options, threshold=0.65)
    usb, _, _ = losses.debiased_pseudo_label_step(weak, strong, state, update_order="usb", **strict)
    assert float(usb) == 0.0
    with pytest.raises(ValueError, match=r"update_order must be one of \('paper', 'usb'\)"):
        losses.debiased_pseudo_label_step(weak, strong, state, update_order="torchssl")


def test_abc_balancing_ratio_and_loss_by_hand():
    # r_k = N_min / N_k: 40, 10 and 20 labels give 10/40, 10/10, 10/20.
    np.testing.assert_allclose(losses.balancing_ratio([40, 10, 20]), [0.25, 1.0, 0.5])
    labeled = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    labels = jnp.array([0, 1])
    # Weak view 0: softmax(5, 0) = (0.99331, 0.00669), confident, pseudo-label 0.
    # Weak view 1: softmax(0.1, 0) = (0.525, 0.475), below 0.95: no loss.
    weak = jnp.array([[5.0, 0.0], [0.1, 0.0]])
    strong = jnp.array([[1.0, 1.0], [0.0, 3.0]])
    loss, metrics = losses.abc_loss(
        labeled, labels, weak, strong, jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0])
    )
    # Labeled: mean(CE((2, 0), 0) * 1, CE((0, 1), 1) * 0) = log(1 + e^-2) / 2 = 0.0634640.
    np.testing.assert_allclose(metrics["abc_labeled"], 0.0634640, atol=1e-6)
    # Unlabeled: mean(CE((1, 1), 0), 0) = log(2) / 2 = 0.3465736.
    np.testing.assert_allclose(metrics["abc_unlabeled"], 0.3465736, atol=1e-6)
    np.testing.assert_allclose(loss, 0.0634640 + 0.3465736, atol=1e-6)
    assert float(metrics["abc_mask_rate"]) == 0.5
    # The Bernoulli draw removes the confident image too.
    _, dropped = losses.abc_loss(
        labeled, labels, weak, strong, jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    )
    assert float(dropped["abc_unlabeled"]) == 0.0 and float(dropped["abc_mask_rate"]) == 0.0
    # No gradient reaches the weak logits (they only make the pseudo-labels).
    grad = jax.grad(
        lambda w: losses.abc_loss(labeled, labels, w, strong, jnp.ones(2), jnp.ones(2))[0]
    )(weak)
    np.testing.assert_array_equal(grad, np.zeros_like(weak))


def test_abc_masks_keep_each_class_at_its_balancing_rate():
    ratio = jnp.array([0.25, 1.0, 0.5])
    n = 40_000
    labels = jnp.zeros(n, jnp.int32)  # All of the most frequent class: kept at r_0 = 0.25.
    key = jax.random.key(0)
    for progress, expected in ((0.0, 1.0), (0.5, 1 - 0.5 * 0.75), (1.0, 0.25)):
        kept_labeled, kept_unlabeled = losses.abc_masks(key, labels, labels, ratio, progress)
        np.testing.assert_allclose(float(kept_labeled.mean()), 0.25, atol=0.01)
        # 1 - (t/T)(1 - r): every pseudo-label at the start, the labeled rate at the end.
        np.testing.assert_allclose(float(kept_unlabeled.mean()), expected, atol=0.01)
    # The rarest class is always kept; the draws are a function of the key.
    rare = jnp.ones(n, jnp.int32)
    assert float(losses.abc_masks(key, rare, rare, ratio, 1.0)[0].mean()) == 1.0
    again = losses.abc_masks(key, labels, labels, ratio, 0.5)
    np.testing.assert_array_equal(again[1], losses.abc_masks(key, labels, labels, ratio, 0.5)[1])
