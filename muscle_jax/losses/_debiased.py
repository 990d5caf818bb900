r"""Debiased pseudo-labelling (adaptive logit adjustment): FixMatch against its own bias.

Wang et al., "Debiased Learning from Naturally Imbalanced Pseudo-Labels"
(CVPR 2022). The model's running mean prediction on the weak view,
``q_hat [C]``, estimates how biased the pseudo-labels are towards some
classes; the pseudo-label divides it out, and the strong view's logits carry
it in the loss (logit adjustment), so a class the model over-predicts is not
reinforced:

.. math::
  \hat y = \arg\max \mathrm{softmax}(z^w - \tau \log \hat q),\quad
  \hat q \leftarrow m \hat q + (1 - m)\, \overline{\mathrm{softmax}(z^w)},\quad
  \ell = \mathrm{CE}(z^s + \tau \log \hat q, \hat y) \cdot
  [\max \mathrm{softmax}(z^w - \tau \log \hat q) \ge t]

By default the pseudo-label uses ``q_hat`` from before the batch's update
and the loss the updated one, in the order of the paper's code (by its
authors: ``main_DebiasPL.py`` in frank-xwang/debiased-pseudo-labeling).
USB's port (semilearn 0.3.2, ``imb_algorithms/debiaspl``) runs the other
order: it updates ``q_hat`` inside ``compute_prob``, so its pseudo-label uses
the updated value, while its loss holds the value set before the step;
``update_order="usb"`` reproduces it. ``q_hat``'s update is the class-wise
mean over the batch, a vector, in both codes; USB's main branch since March
2024 (after 0.3.2) reduces it to one scalar (``mean()`` over both axes),
which makes ``log q_hat`` the same for every class and the adjustment a no-op
(docs/method.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses._supervised import supervised_loss

State = dict[str, jax.Array]

# When q_hat moves relative to its two uses: "paper": the pseudo-label reads the
# step-start q_hat and the loss the updated one; "usb": the other way round.
DEBIASED_UPDATE_ORDERS = ("paper", "usb")


def debiased_init(num_classes: int) -> State:
    """``q_hat`` starts uniform: no bias is assumed before the first batch.

    Examples:
      >>> from muscle_jax import losses
      >>> losses.debiased_init(4)
      {'q_hat': Array([0.25, 0.25, 0.25, 0.25], dtype=float32)}

    Args:
      num_classes: ``C``.

    Returns:
      ``{"q_hat": [C]}`` in float32, the state of
      :func:`debiased_pseudo_label_step`.

    References:
      Wang et al., `Debiased Learning from Naturally Imbalanced Pseudo-Labels
      <https://arxiv.org/abs/2201.01490>`_, CVPR 2022. Code:
      ``main_DebiasPL.py`` in frank-xwang/debiased-pseudo-labeling.
    """
    return {"q_hat": jnp.full((num_classes,), 1.0 / num_classes, jnp.float32)}


def debiased_pseudo_label_step(
    view_a_logits: ArrayLike,
    view_b_logits: ArrayLike,
    state: State,
    *,
    tau: float = 0.4,
    momentum: float = 0.999,
    threshold: float = 0.95,
    update_order: str = "paper",
) -> tuple[jax.Array, dict[str, jax.Array], State]:
    """The whole consistency term: (loss, metrics, new state).

    The module's formula, with ``q_hat`` moved towards this batch's mean weak
    prediction; the loss is the masked cross-entropy averaged over the whole
    unlabeled batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak, strong = jnp.array([[5.0, 0.0], [0.0, 0.1]]), jnp.zeros((2, 2))
      >>> loss, metrics, state = losses.debiased_pseudo_label_step(
      ...     weak, strong, losses.debiased_init(2))
      >>> round(float(loss), 2), float(metrics["mask_rate"]), state["q_hat"].shape
      (0.35, 0.5, (2,))

    Args:
      view_a_logits: weak-view logits ``[batch, C]`` (no gradient flows into them).
      view_b_logits: strong-view logits ``[batch, C]``; they receive the gradient.
      state: ``{"q_hat": [C]}`` from `debiased_init` or the previous step.
      tau: strength of the adjustment (0: FixMatch).
      momentum: ``m`` of ``q_hat``'s moving average.
      threshold: confidence of the adjusted weak prediction to keep an image.
      update_order: ``"paper"`` (pseudo-label from the step-start ``q_hat``,
        loss with the updated one) or ``"usb"`` (the reverse, USB 0.3.2).

    Returns:
      ``(loss, metrics, state)``: the float32 scalar masked cross-entropy
      averaged over the batch, ``{"mask_rate": scalar}`` and
      ``{"q_hat": [C]}`` updated, to pass to the next step.

    References:
      Wang et al., `Debiased Learning from Naturally Imbalanced Pseudo-Labels
      <https://arxiv.org/abs/2201.01490>`_, CVPR 2022. Code:
      ``main_DebiasPL.py`` in frank-xwang/debiased-pseudo-labeling.
    """
    if update_order not in DEBIASED_UPDATE_ORDERS:
        raise ValueError(
            f"update_order must be one of {DEBIASED_UPDATE_ORDERS}, got {update_order!r}."
        )
    weak = jax.lax.stop_gradient(jnp.asarray(view_a_logits, jnp.float32))
    # The class-wise batch mean: a vector of C, not one number.
    q_hat = momentum * state["q_hat"] + (1.0 - momentum) * jnp.mean(jax.nn.softmax(weak), axis=0)
    label_q, loss_q = (
        (state["q_hat"], q_hat) if update_order == "paper" else (q_hat, state["q_hat"])
    )
    adjusted = jax.nn.softmax(weak - tau * jnp.log(label_q))
    pseudo_labels = jnp.argmax(adjusted, axis=-1)
    mask = (jnp.max(adjusted, axis=-1) >= threshold).astype(jnp.float32)
    strong = jnp.asarray(view_b_logits, jnp.float32) + tau * jnp.log(loss_q)
    loss = jnp.mean(supervised_loss(strong, pseudo_labels) * mask)
    return loss, {"mask_rate": jnp.mean(mask)}, {"q_hat": q_hat}
