"""What a method is: one `Term` of the objective, with everything the trainer asks of it.

The objective is ``w_s L_sup + w_c(t) L_cons + w_u(t) L_unsup + w_a L_addon``:
one term of each role. The add-on role is for terms that go on top of any
base without replacing one (ABC's balanced head); its default is ``none``.
A `Term` says in one place what it needs (views from the input pipeline,
the EMA teacher, a projector head, a second forward pass through
`prepare`), the state it carries across steps (saved in checkpoints), its
config section ``loss.<name>`` with defaults, the checks of that section,
and its loss. The trainer, the input pipeline and the config checks ask the
registry (`muscle_jax.methods`); no other module branches on a method's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
import numpy as np
from etils import epy

# JAX (and the losses built on it) load when a term first runs: building a config
# asks the registry but runs no term, and the experiment suites, the config checks
# and `--help` should not pay JAX's import (about 1.5 s) to do so. (Annotations
# stay strings, from __future__, so they do not load it either.)
with epy.lazy_imports():
    import jax

SUPERVISED = "supervised"
CONSISTENCY = "consistency"
UNSUPERVISED = "unsupervised"
ADDON = "addon"
ROLES = (SUPERVISED, CONSISTENCY, UNSUPERVISED, ADDON)
# The `ModelOutput` field the evaluation reads unless a chosen term names another.
DEFAULT_EVALUATION_HEAD = "logits"

# The pair of views a term reads of each unlabeled image (``view_a``, ``view_b``).
UNLABELED_VIEWS = ("weak_strong", "weak_weak")


def dropout_key(key: jax.Array, forward_pass: int) -> jax.Array:
    """The dropout key of a step's ``forward_pass``-th student pass (0: the objective's).

    Folded from the step's key with a constant of its own, so the streams that
    methods draw from the step's key (MixMatch's MixUp) are not reused.
    """
    return jax.random.fold_in(jax.random.fold_in(key, 0x64726F70), forward_pass)


@dataclasses.dataclass
class Inputs:
    """What one forward pass of the student gives every term of a train step.

    The objective fills it; a term's `Term.prepare` may replace fields (MixMatch
    sets the supervised term's logits and targets to its mixed batch's) or add
    to ``extras``. Unlabeled fields are None when the pipeline yields no
    unlabeled batch; ``view_a`` is the weak view, ``view_b`` the strong or a
    second weak one. ``view_c`` is a second weak view beside a strong
    ``view_b``, there only when a term asked for two weak views
    (`Term.weak_pair`) and another for a strong one; read it through
    `second_weak`.
    """

    labeled_logits: jax.Array
    labels: jax.Array
    labeled_index: jax.Array | None
    supervised_logits: jax.Array
    supervised_targets: jax.Array  # [B] int labels, or [B, C] soft targets (MixMatch).
    labeled_strong_logits: jax.Array | None = None
    view_a_logits: jax.Array | None = None
    view_b_logits: jax.Array | None = None
    view_a_projections: jax.Array | None = None
    view_b_projections: jax.Array | None = None
    view_a_overclustering: jax.Array | None = None  # [heads, batch, outputs]
    view_b_overclustering: jax.Array | None = None
    view_c_logits: jax.Array | None = None
    view_c_projections: jax.Array | None = None
    view_c_overclustering: jax.Array | None = None
    teacher_a_logits: jax.Array | None = None
    # The balanced head's logits (ABC), when a term asked for that head.
    labeled_balanced_logits: jax.Array | None = None
    view_a_balanced_logits: jax.Array | None = None
    view_b_balanced_logits: jax.Array | None = None
    # The MI head's logits (``loss.iic.head``), when a term asked for that head.
    labeled_mi_logits: jax.Array | None = None
    labeled_strong_mi_logits: jax.Array | None = None
    view_a_mi_logits: jax.Array | None = None
    view_b_mi_logits: jax.Array | None = None
    view_c_mi_logits: jax.Array | None = None
    # [mu*B] the unlabeled images' ids in [0, StateSpec.num_unlabeled) (FlexMatch's record).
    unlabeled_index: jax.Array | None = None
    # For a second pass: the student, the batch, this step's key and dtype.
    model: Callable[..., Any] | None = None
    batch: Mapping[str, jax.Array] | None = None
    key: jax.Array | None = None
    step: jax.Array | None = None
    total_steps: int = 0  # The run's length, for terms with their own schedule.
    num_classes: int = 0
    dtype: Any = np.float32  # The compute dtype (jnp.bfloat16 on accelerators).
    extras: dict[str, jax.Array] = dataclasses.field(default_factory=dict)

    @property
    def has_unlabeled(self) -> bool:
        return self.view_a_logits is not None

    def second_weak(self, output: str = "logits") -> jax.Array | None:
        """``view_c_<output>`` when the batch has a third view, else ``view_b_<output>``.

        The pairing that `Term.weak_pair` asks for: the pipeline adds ``view_c``
        exactly when ``view_b`` is strong, so either way this is a weak view
        drawn independently of ``view_a``. ``output``: ``logits``,
        ``projections``, ``overclustering`` or ``mi_logits``.
        """
        third = getattr(self, f"view_c_{output}")
        return getattr(self, f"view_b_{output}") if third is None else third


@dataclasses.dataclass(frozen=True)
class TermResult:
    """A term's loss (to be minimised, unweighted), its diagnostics and its new state."""

    value: jax.Array
    metrics: Mapping[str, jax.Array] = dataclasses.field(default_factory=dict)
    state: Any = None


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """What a term may size its state by."""

    num_train: int  # Training-set examples; ``labeled_index`` lies in [0, num_train).
    num_classes: int
    # The unlabeled pool (training set + unlabeled-only splits such as STL-10's);
    # ``unlabeled_index`` lies in [0, num_unlabeled). 0: not known (no such state).
    num_unlabeled: int = 0
    # The labeled subset's examples per class (its size, imbalance and seed fix it).
    labeled_class_counts: tuple[int, ...] = ()


def _no_problems(section: ml_collections.ConfigDict, config: ml_collections.ConfigDict):
    return []


@dataclasses.dataclass(frozen=True)
class Term:
    """One method: a term of the objective and what it needs from the rest.

    Attributes:
      name: what ``loss.<role>`` selects; also the config section ``loss.<name>``.
      role: one of `ROLES`.
      loss: ``(inputs, section, state) -> TermResult``; runs inside the jitted
        step. ``state`` is None for a term without state.
      description: one line for docs and ``--help``.
      defaults: the config section ``loss.<name>`` with its defaults.
      unlabeled_views: the views the term needs of each unlabeled image (one
        of `UNLABELED_VIEWS`), or None when it needs no unlabeled batch.
      labeled_views: ``section -> 1 or 2``: 2 adds a strong view of the labeled images.
      weak_pair: ``section -> bool``: the term pairs ``view_a`` with a second,
        independently drawn weak view (`Inputs.second_weak`), whatever the
        consistency term's pair. Beside a term that needs a strong view the
        pipeline then yields a third view (``unlabeled_c``), forwarded in the
        same pass.
      needs_teacher: the term reads ``inputs.teacher_a_logits`` (EMA model).
      model_heads: ``section -> dict`` of `models.create_model` keywords the
        term needs (e.g. a projector head).
      prepare: optional ``(inputs, section) -> inputs`` run before any term's
        loss, e.g. a second forward pass.
      replaces_supervised_inputs: ``prepare`` sets the supervised term's
        logits and targets to other examples (MixMatch's mixed batch).
      weighting: for consistency terms, the weight schedule the method's own
        paper uses: ``{"weight": w, "rampup": kind, "rampup_steps": None}``
        (None: a quarter of the run, at most 16384 steps), applied to
        ``loss.consistency_weight`` / ``_rampup`` / ``_rampup_steps`` by
        `config_defaults.apply_method`; empty keeps the config's.
      init_state: optional ``(StateSpec, section) -> pytree``: state carried
        across steps and saved in checkpoints.
      state_partition: optional ``(StateSpec, section, num_devices) -> pytree of
        PartitionSpec``: how the state is laid out over the ``("data",)`` mesh
        (default: replicated).
      check: ``(section, config) -> [problem, ...]``: config checks run before
        anything is built.
      evaluation_head: the `ModelOutput` field the evaluation reads when this
        term is chosen (ABC: ``balanced_logits``); None leaves it to the others
        (default: ``logits``).
      added_keys: keys of ``defaults`` added after runs were saved, each with
        the value that does what those runs did (not necessarily today's
        default): a saved config without the key reads as that value, so its
        checkpoints resume and ``init_from`` rebuilds its state.
    """

    name: str
    role: str
    loss: Callable[[Inputs, ml_collections.ConfigDict, Any], TermResult]
    description: str
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    unlabeled_views: str | None = None
    labeled_views: Callable[[ml_collections.ConfigDict], int] = lambda section: 1
    weak_pair: Callable[[ml_collections.ConfigDict], bool] = lambda section: False
    needs_teacher: bool = False
    model_heads: Callable[[ml_collections.ConfigDict], dict[str, Any]] = lambda section: {}
    prepare: Callable[[Inputs, ml_collections.ConfigDict], Inputs] | None = None
    replaces_supervised_inputs: bool = False
    weighting: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    init_state: Callable[[StateSpec, ml_collections.ConfigDict], Any] | None = None
    state_partition: Callable[[StateSpec, ml_collections.ConfigDict, int], Any] | None = None
    check: Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict], list[str]] = (
        _no_problems
    )
    evaluation_head: str | None = None
    added_keys: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Term {self.name!r}: role {self.role!r} is not one of {ROLES}.")
        if self.unlabeled_views not in (None, *UNLABELED_VIEWS):
            raise ValueError(
                f"Term {self.name!r}: unlabeled_views {self.unlabeled_views!r} is not one of "
                f"{UNLABELED_VIEWS} or None."
            )
        unknown = sorted(set(self.added_keys) - set(self.defaults))
        if unknown:
            raise ValueError(f"Term {self.name!r}: added_keys {unknown} are not in its defaults.")
