"""Label noise on the labeled training set: seeded, pure NumPy, identical on every host.

``data.label_noise`` (a fraction, 0 = off) and ``data.label_noise_kind``
corrupt the labels of the labeled subset `splits.select_labeled_indices`
chose, and nothing else: the unlabeled stream never reads labels, and the
test and validation sets keep theirs. The noisy labels are a function of
(the labeled subset's true labels, the fraction, the kind, the seed, the
dataset), drawn on NumPy PCG64 streams of their own, so every host corrupts
the same examples the same way without communicating, and switching the
noise on does not move the labeled subset, the validation set or the
shuffles. `input_pipeline.make_train_iterator` applies `noisy_labels`;
`describe` is what results.json records.

Kinds:

- ``symmetric``: ``round(fraction * n)`` of the ``n`` labeled examples,
  drawn without replacement, each get a class drawn uniformly from the
  *other* ``K - 1`` classes, so exactly that many labels are wrong.
- ``asymmetric``: class-pair flips. On CIFAR-10 the pairs of self-adaptive
  training (arXiv 2101.08732, after Patrini et al. 2017): truck -> automobile,
  bird -> airplane, deer -> horse, cat <-> dog; the other five classes keep
  their labels. On any other dataset, class ``c -> (c + 1) mod K`` for every
  class (the usual choice in the noisy-label literature). In each flipped
  class ``round(fraction * n_c)`` of its ``n_c`` labeled examples are
  flipped, drawn from the true labels, so cat -> dog and dog -> cat are
  independent. The realised rate over the labeled set is then the fraction
  times the share of the labeled set in flipped classes (half of it on
  balanced CIFAR-10).

Whole counts round half up (``floor(fraction * n + 0.5)``).
"""

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from muscle_jax.data.validation import DataRequestError

KINDS = ("symmetric", "asymmetric")
# CIFAR-10's class-pair flips (class indices of TFDS cifar10): truck(9) -> automobile(1),
# bird(2) -> airplane(0), deer(4) -> horse(7), cat(3) <-> dog(5).
CIFAR10_FLIPS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
CIFAR10_NAME = "cifar10"
# The keys' values that do what a run saved before they existed did: no noise.
KEYS_ADDED = {"data.label_noise": 0.0, "data.label_noise_kind": "symmetric"}
# Their own streams ("nois"), apart from the labeled subset's and the validation set's.
_STREAM = 0x6E6F6973


def config_problems(data_config) -> list[str]:
    """One line per invalid ``data.label_noise`` / ``data.label_noise_kind`` value."""
    problems = []
    fraction, kind = data_config.label_noise, data_config.label_noise_kind
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        problems.append(f"data.label_noise={fraction!r} must be a number in [0, 1) (0: off).")
    elif not 0.0 <= fraction < 1.0:
        problems.append(
            f"data.label_noise={fraction} must be in [0, 1): the fraction of labeled examples "
            "whose label is corrupted (0: off)."
        )
    if kind not in KINDS:
        problems.append(f"data.label_noise_kind={kind!r} is not one of {KINDS}.")
    return problems


def flip_map(num_classes: int, dataset: str) -> np.ndarray:
    """The asymmetric kind's class -> noisy class, ``[num_classes]`` int64.

    CIFAR-10's pairs (`CIFAR10_FLIPS`; other classes map to themselves) when
    ``dataset`` is ``cifar10`` with 10 classes, else ``c -> (c + 1) mod K``.
    """
    if dataset == CIFAR10_NAME and num_classes == 10:
        mapping = np.arange(num_classes, dtype=np.int64)
        for source, target in CIFAR10_FLIPS.items():
            mapping[source] = target
        return mapping
    return (np.arange(num_classes, dtype=np.int64) + 1) % num_classes


def _count(fraction: float, size: int) -> int:
    return math.floor(fraction * size + 0.5)


def noisy_labels(
    labels: ArrayLike,
    *,
    fraction: float,
    kind: str,
    seed: int,
    num_classes: int,
    dataset: str,
) -> np.ndarray:
    """The labeled examples' labels after the noise (int64, same order as ``labels``).

    Args:
      labels: ``[n]`` true labels of the labeled subset, in its (sorted index) order.
      fraction: in ``[0, 1)``; 0 returns the labels unchanged.
      kind: ``symmetric`` or ``asymmetric`` (module docstring).
      seed: the run's seed; the noise is a deterministic function of it.
      num_classes: ``K``.
      dataset: the dataset's name (``cifar10`` selects its class pairs).

    Raises:
      DataRequestError: a fraction outside ``[0, 1)``, an unknown kind, a label
        outside ``[0, K)``, or fewer than 2 classes.

    >>> noisy = noisy_labels([0, 1, 2, 3] * 5, fraction=0.2, kind="symmetric", seed=0,
    ...                      num_classes=4, dataset="digits")
    >>> int((noisy != [0, 1, 2, 3] * 5).sum())
    4
    """
    labels = np.asarray(labels, np.int64)
    if not 0.0 <= fraction < 1.0:
        raise DataRequestError(f"label noise fraction {fraction} must be in [0, 1).")
    if kind not in KINDS:
        raise DataRequestError(f"label noise kind {kind!r} is not one of {KINDS}.")
    if num_classes < 2:
        raise DataRequestError(f"label noise needs at least 2 classes, got {num_classes}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataRequestError(f"labels must lie in [0, {num_classes}) for label noise.")
    noisy = labels.copy()
    if fraction == 0.0 or labels.size == 0:
        return noisy
    if kind == "symmetric":
        rng = np.random.default_rng([seed, _STREAM])
        chosen = rng.choice(labels.size, size=_count(fraction, labels.size), replace=False)
        # An offset in [1, K) never maps a class to itself and is uniform over the others.
        offsets = rng.integers(1, num_classes, size=chosen.size)
        noisy[chosen] = (labels[chosen] + offsets) % num_classes
        return noisy
    mapping = flip_map(num_classes, dataset)
    for cls in range(num_classes):
        if mapping[cls] == cls:
            continue
        members = np.flatnonzero(labels == cls)
        rng = np.random.default_rng([seed, cls, _STREAM])
        chosen = rng.choice(members, size=_count(fraction, members.size), replace=False)
        noisy[chosen] = mapping[cls]
    return noisy


def describe(
    indices: ArrayLike,
    labels: ArrayLike,
    noisy: ArrayLike,
    *,
    fraction: float,
    kind: str,
    num_classes: int,
    dataset: str,
) -> dict[str, Any]:
    """results.json's ``label_noise``: the setting and exactly which labels it changed.

    ``indices`` are the labeled examples' indices in the training split,
    ``labels`` their true labels and ``noisy`` what training saw.
    """
    indices, labels, noisy = (np.asarray(a, np.int64) for a in (indices, labels, noisy))
    changed = np.flatnonzero(labels != noisy)
    return {
        "fraction": float(fraction),
        "kind": kind,
        # The asymmetric kind's class -> noisy class (None for symmetric noise).
        "flips": flip_map(num_classes, dataset).tolist() if kind == "asymmetric" else None,
        "num_labeled": int(labels.size),
        "num_changed": int(changed.size),
        "realised_rate": float(changed.size / labels.size) if labels.size else 0.0,
        "changed": {
            "indices": indices[changed].tolist(),
            "original": labels[changed].tolist(),
            "noisy": noisy[changed].tolist(),
        },
    }
