"""The methods muscle_jax trains with, one `Term` definition each, and what they imply.

``loss.supervised``, ``loss.consistency``, ``loss.unsupervised`` and
``loss.addon`` each name a registered `Term`. Everything else asks this module what the chosen terms
need: the views the input pipeline yields (`unlabeled_views`,
`labeled_views`), the EMA teacher (`needs_teacher`), extra model heads
(`model_heads`), state carried across steps (`init_state`), config sections
(`config_sections`), checks (`check`) and the head the evaluation reads
(`evaluation_head`). Adding a method is one `Term` and
`register(term)`; see docs/method.md.
"""

import ml_collections

from muscle_jax.methods.base import (
    ADDON,
    CONSISTENCY,
    DEFAULT_EVALUATION_HEAD,
    ROLES,
    SUPERVISED,
    UNLABELED_VIEWS,
    UNSUPERVISED,
    Inputs,
    StateSpec,
    Term,
    TermResult,
    dropout_key,
)

__all__ = [
    "ADDON",
    "CONSISTENCY",
    "DEFAULT_EVALUATION_HEAD",
    "ROLES",
    "SUPERVISED",
    "UNLABELED_VIEWS",
    "UNSUPERVISED",
    "Inputs",
    "StateSpec",
    "Term",
    "TermResult",
    "check",
    "chosen",
    "config_sections",
    "dropout_key",
    "evaluation_head",
    "get",
    "init_state",
    "keys_added_later",
    "labeled_views",
    "model_heads",
    "names",
    "names_its_terms",
    "needs_teacher",
    "pipeline_views",
    "register",
    "selected",
    "state_partition",
    "unlabeled_views",
    "unregister",
]

_REGISTRY: dict[str, dict[str, Term]] = {role: {} for role in ROLES}


def register(term: Term) -> Term:
    """Makes ``term`` selectable as ``loss.<term.role>=<term.name>``; returns it.

    Raises:
      ValueError: the name is taken in its role, or its config section
        ``loss.<name>`` would clash with another term's or a loss key.
    """
    if term.name in _REGISTRY[term.role]:
        raise ValueError(f"A {term.role} term called {term.name!r} is already registered.")
    if term.defaults:
        for role, terms in _REGISTRY.items():
            other = terms.get(term.name)
            if other is not None and other.defaults:
                raise ValueError(
                    f"Term {term.name!r} ({term.role}) would share the config section "
                    f"loss.{term.name} with the {role} term of that name."
                )
    _REGISTRY[term.role][term.name] = term
    return term


def unregister(role: str, name: str) -> None:
    """Removes a term (for tests that register their own)."""
    _REGISTRY[role].pop(name)


def names(role: str) -> tuple[str, ...]:
    """The names ``loss.<role>`` accepts."""
    return tuple(_REGISTRY[role])


def get(role: str, name: str) -> Term:
    if name not in _REGISTRY[role]:
        raise ValueError(f"Unknown loss.{role}={name!r}; choose one of {names(role)}.")
    return _REGISTRY[role][name]


# Roles added after runs were saved, with what such a run's config means by them,
# so old runs resume and report as they were.
_LATER_ROLES = {ADDON: "none"}


def chosen(loss_config: ml_collections.ConfigDict, role: str) -> str:
    """The name ``loss_config`` gives ``role`` (`_LATER_ROLES`' default when it has none)."""
    if role not in loss_config and role in _LATER_ROLES:
        return _LATER_ROLES[role]
    return loss_config[role]


def names_its_terms(loss_config) -> bool:
    """Whether ``loss_config`` names its terms (configs written before terms had names do not)."""
    return all(role in loss_config or role in _LATER_ROLES for role in ROLES)


def selected(loss_config: ml_collections.ConfigDict) -> dict[str, Term]:
    """``{role: Term}`` for the terms ``loss_config`` selects."""
    return {role: get(role, chosen(loss_config, role)) for role in ROLES}


def section(loss_config: ml_collections.ConfigDict, term: Term) -> ml_collections.ConfigDict:
    """The term's config section ``loss.<name>`` (empty for a term without settings).

    A section saved before some of its keys existed gets them with the values
    that do what it did then (`Term.added_keys`).
    """
    if term.defaults and term.name in loss_config:
        found = loss_config[term.name]
        missing = {key: value for key, value in term.added_keys.items() if key not in found}
        if missing:
            return ml_collections.ConfigDict({**found.to_dict(), **missing})
        return found
    return ml_collections.ConfigDict(dict(term.defaults))


def keys_added_later() -> dict[str, object]:
    """``{"loss.<name>.<key>": value}``: `Term.added_keys` of every registered term."""
    return {
        f"loss.{term.name}.{key}": value
        for terms in _REGISTRY.values()
        for term in terms.values()
        for key, value in term.added_keys.items()
    }


def config_sections() -> dict[str, ml_collections.ConfigDict]:
    """``{name: section}`` with the defaults of every registered term that has settings."""
    return {
        term.name: ml_collections.ConfigDict(dict(term.defaults))
        for terms in _REGISTRY.values()
        for term in terms.values()
        if term.defaults
    }


def unlabeled_views(config: ml_collections.ConfigDict) -> str:
    """The views of each unlabeled image the input pipeline yields (`pipeline_views`).

    "none" when there is no unlabeled batch (``data.unlabeled_ratio=0``).
    """
    if config.data.unlabeled_ratio == 0:
        return "none"
    return pipeline_views(config.loss)


def pipeline_views(loss_config: ml_collections.ConfigDict) -> str:
    """The views of each unlabeled image the chosen terms need, given an unlabeled batch.

    One of `UNLABELED_VIEWS`, "weak_strong_weak" or "none" (no term reads
    unlabeled images). The consistency term decides the pair (its
    augmentation pair is part of the method); otherwise the first other term
    that needs unlabeled images. A term that asks for two weak views
    (`Term.weak_pair`) where that pair is weak/strong gets them: "weak_weak"
    when no other chosen term needs the strong view, else a third view
    ("weak_strong_weak": weak, strong, second weak).
    """
    terms = selected(loss_config)
    deciding = [
        terms[role].unlabeled_views
        for role in (CONSISTENCY, UNSUPERVISED, SUPERVISED)
        if terms[role].unlabeled_views is not None
    ]
    if not deciding:
        return "none"
    if deciding[0] != "weak_strong":
        return deciding[0]  # Every term's view_b is then a weak view already.
    pairing = {
        role: term.weak_pair(section(loss_config, term))
        for role, term in terms.items()
        if term.unlabeled_views is not None
    }
    if not any(pairing.values()):
        return "weak_strong"
    needs_strong = any(
        terms[role].unlabeled_views == "weak_strong" and not pairs
        for role, pairs in pairing.items()
    )
    return "weak_strong_weak" if needs_strong else "weak_weak"


def labeled_views(config: ml_collections.ConfigDict) -> int:
    """1, or 2 when a term also needs a strong view of the labeled images."""
    return max(
        term.labeled_views(section(config.loss, term)) for term in selected(config.loss).values()
    )


def needs_teacher(loss_config: ml_collections.ConfigDict) -> bool:
    return any(term.needs_teacher for term in selected(loss_config).values())


def model_heads(loss_config: ml_collections.ConfigDict) -> dict:
    """`models.create_model` keywords the chosen terms need (e.g. ``projector_dim``)."""
    heads = {}
    for term in selected(loss_config).values():
        heads.update(term.model_heads(section(loss_config, term)))
    return heads


def _stateful(loss_config: ml_collections.ConfigDict, spec: StateSpec) -> list[Term]:
    """The chosen terms whose state has leaves (an option may leave a term stateless)."""
    import jax

    terms = []
    for term in selected(loss_config).values():
        if term.init_state is None:
            continue
        term_section = section(loss_config, term)
        shape = jax.eval_shape(lambda t=term, s=term_section: t.init_state(spec, s))
        if jax.tree.leaves(shape):
            terms.append(term)
    return terms


def init_state(loss_config: ml_collections.ConfigDict, spec: StateSpec) -> dict:
    """``{term name: state}`` for the chosen terms that carry state across steps."""
    import jax
    import jax.numpy as jnp

    states = {
        term.name: term.init_state(spec, section(loss_config, term))
        for term in _stateful(loss_config, spec)
    }
    # Every leaf its own buffer: the state is donated to the step, and a term may
    # start two leaves from one array (one buffer cannot be donated twice).
    return jax.tree.map(jnp.array, states)


def state_partition(loss_config: ml_collections.ConfigDict, spec: StateSpec, num_devices: int):
    """PartitionSpecs over the ``("data",)`` mesh for `init_state`'s tree (None: replicated)."""
    import jax
    from jax.sharding import PartitionSpec as P

    partitions = {}
    for term in _stateful(loss_config, spec):
        term_section = section(loss_config, term)
        if term.state_partition is None:
            shape = jax.eval_shape(lambda t=term, s=term_section: t.init_state(spec, s))
            partitions[term.name] = jax.tree.map(lambda _: P(), shape)
        else:
            partitions[term.name] = term.state_partition(spec, term_section, num_devices)
    return partitions


def _named_heads(terms: dict[str, Term]) -> dict[str, str]:
    return {
        f"loss.{role}={term.name!r}": term.evaluation_head
        for role, term in terms.items()
        if term.evaluation_head
    }


def evaluation_head(loss_config: ml_collections.ConfigDict) -> str:
    """The `ModelOutput` field the evaluation reads: the one a chosen term names, else logits."""
    named = set(_named_heads(selected(loss_config)).values())
    if len(named) > 1:
        raise ValueError(f"The chosen terms name different evaluation heads: {sorted(named)}.")
    return named.pop() if named else DEFAULT_EVALUATION_HEAD


def check(config: ml_collections.ConfigDict) -> list[str]:
    """Problems with the chosen terms and their sections, each naming the key to fix."""
    problems = []
    for role in ROLES:
        name = chosen(config.loss, role)
        if name not in _REGISTRY[role]:
            problems.append(f"loss.{role}={name!r} is not one of {names(role)}.")
    if problems:
        return problems
    terms = selected(config.loss)
    for term in terms.values():
        problems += term.check(section(config.loss, term), config)
    heads = _named_heads(terms)
    if len(set(heads.values())) > 1:
        problems.append(
            f"The chosen terms each want the evaluation to read their own head ({heads}); "
            "choose one of them."
        )
    if config.data.unlabeled_ratio == 0:
        needing = [f"loss.{t.role}={t.name!r}" for t in terms.values() if t.unlabeled_views]
        if needing:
            problems.append(
                f"data.unlabeled_ratio=0 (no unlabeled batch), but {', '.join(needing)} needs "
                "unlabeled images; choose 'none' for it or an unlabeled_ratio >= 1."
            )
    return problems


# The built-in terms register themselves on import.
# FixMatch-era consistency terms first, then the modern bases and the imbalance-aware
# additions, as tables list them.
from muscle_jax.methods import consistency, adaptive, imbalance, supervised, unsupervised  # noqa: E402, F401, I001
