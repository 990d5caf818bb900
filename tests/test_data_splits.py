"""select_labeled_indices: per-class counts, determinism, long tails, and refusals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muscle_jax.data import splits
from muscle_jax.input_pipeline import per_class_counts, select_labeled_indices


def _labels(per_class: int, num_classes: int, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def test_balanced_exact_per_class_counts():
    labels = _labels(50, 10)
    idx = select_labeled_indices(labels, num_labeled=40, seed=1)
    assert idx.dtype == np.int64 and len(idx) == 40
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), np.full(10, 4))
    assert np.all(np.diff(idx) > 0)  # sorted and unique


def test_same_seed_same_indices_other_seed_other_indices():
    labels = _labels(100, 10)
    first = select_labeled_indices(labels, num_labeled=100, seed=7)
    np.testing.assert_array_equal(first, select_labeled_indices(labels, num_labeled=100, seed=7))
    assert not np.array_equal(first, select_labeled_indices(labels, num_labeled=100, seed=8))


def test_fixed_values_guard_against_silent_changes():
    # Hosts and reruns must agree forever: a change here changes every labeled subset.
    labels = np.arange(40) % 4
    idx = select_labeled_indices(labels, num_labeled=8, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [2, 2, 2, 2])
    np.testing.assert_array_equal(idx, select_labeled_indices(labels.copy(), num_labeled=8, seed=0))


def test_one_class_pick_does_not_depend_on_other_classes():
    labels = _labels(30, 3)
    more = np.concatenate([labels, np.full(20, 2)])  # extra examples of class 2 only
    a = select_labeled_indices(labels, num_labeled=9, seed=3)
    b = select_labeled_indices(more, num_labeled=9, seed=3)
    np.testing.assert_array_equal(a[labels[a] == 0], b[more[b] == 0])


@settings(max_examples=40, deadline=None)
@given(
    num_classes=st.integers(1, 8),
    per_class=st.integers(1, 20),
    take=st.integers(1, 20),
    seed=st.integers(0, 2**31),
)
def test_balanced_properties(num_classes, per_class, take, seed):
    labels = _labels(per_class, num_classes, seed=seed % 7)
    num_labeled = num_classes * min(take, per_class)
    idx = select_labeled_indices(labels, num_labeled=num_labeled, seed=seed)
    assert len(np.unique(idx)) == num_labeled
    assert idx.min() >= 0 and idx.max() < len(labels)
    counts = np.bincount(labels[idx], minlength=num_classes)
    assert np.all(counts == num_labeled // num_classes)


@settings(max_examples=40, deadline=None)
@given(
    num_classes=st.integers(2, 12),
    num_labeled=st.integers(100, 2000),
    ratio=st.floats(1.5, 50.0),
)
def test_long_tail_profile_properties(num_classes, num_labeled, ratio):
    counts = per_class_counts(num_labeled, num_classes, imbalance_ratio=ratio)
    assert counts.sum() == num_labeled
    assert np.all(np.diff(counts) <= 0)  # class 0 largest, falling
    ideal = num_labeled / np.sum(ratio ** (-np.arange(num_classes) / (num_classes - 1)))
    # Rounding moves each count by less than one example.
    expected = ideal * ratio ** (-np.arange(num_classes) / (num_classes - 1))
    assert np.all(np.abs(counts - expected) < 1.0 + 1e-9)


def test_long_tail_ratio_and_exponential_shape():
    counts = per_class_counts(10_000, 10, imbalance_ratio=100.0)
    assert counts.sum() == 10_000
    assert counts[0] / counts[-1] == pytest.approx(100.0, rel=0.02)
    # Exponential: constant ratio between neighbours.
    np.testing.assert_allclose(counts[:-1] / counts[1:], 100 ** (1 / 9), rtol=0.05)
    labels = _labels(4100, 10)
    idx = select_labeled_indices(labels, num_labeled=10_000, seed=0, imbalance_ratio=100.0)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), counts)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"num_labeled": 25}, ["25", "10 classes"]),
        ({"num_labeled": -10}, ["positive", "-10"]),
        ({"num_labeled": 120}, ["holds 10", "12"]),
        ({"num_labeled": 10, "imbalance_ratio": 0.5}, ["imbalance_ratio", "0.5"]),
        ({"num_labeled": 12, "imbalance_ratio": 100.0}, ["too small", "100.0"]),
    ],
)
def test_impossible_requests_raise_naming_the_numbers(kwargs, words):
    labels = _labels(10, 10)
    with pytest.raises(ValueError) as error:
        select_labeled_indices(labels, seed=0, **kwargs)
    for word in words:
        assert word in str(error.value)


def test_bad_labels_rejected():
    with pytest.raises(ValueError, match="1-D integer"):
        select_labeled_indices(np.zeros((4, 2), int), num_labeled=2, seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        select_labeled_indices(np.array([0, -1, 1]), num_labeled=2, seed=0)
    with pytest.raises(ValueError, match="num_classes=2"):
        select_labeled_indices(np.array([0, 1, 2]), num_labeled=2, seed=0, num_classes=2)


def test_the_validation_set_is_per_class_and_never_labeled():
    labels = np.repeat(np.arange(3), 20)
    held_out = splits.select_validation_indices(labels, num_per_class=4, seed=5, num_classes=3)
    assert held_out.dtype == np.int64 and np.all(np.diff(held_out) > 0)
    assert np.bincount(labels[held_out], minlength=3).tolist() == [4, 4, 4]
    labeled = splits.select_labeled_indices(labels, num_labeled=45, seed=5, exclude=held_out)
    assert not set(labeled) & set(held_out)  # 15 of each class's other 16.
    # Without a validation set the labeled subset is what it always was.
    np.testing.assert_array_equal(
        splits.select_labeled_indices(labels, num_labeled=9, seed=5, exclude=None),
        splits.select_labeled_indices(labels, num_labeled=9, seed=5),
    )
    none = splits.select_validation_indices(labels, num_per_class=0, seed=5, num_classes=3)
    assert none.size == 0
    with pytest.raises(ValueError, match="outside the validation set"):
        splits.select_labeled_indices(labels, num_labeled=51, seed=5, exclude=held_out)
    with pytest.raises(ValueError, match="num_validation=21 a class, but class 0 holds 20"):
        splits.select_validation_indices(labels, num_per_class=21, seed=5, num_classes=3)


def _digits_stream(*, seed: int, **options):
    """Digits' training stream, 40 labels, batches of 40 + 280 unlabeled, one process."""
    from muscle_jax import input_pipeline as ip

    return ip.make_train_iterator(
        "digits",
        data_dir=None,
        num_labeled=40,
        seed=seed,
        labeled_batch_size=40,
        unlabeled_ratio=7,
        unlabeled_views="weak_strong",
        process_index=0,
        process_count=1,
        **options,
    )


def test_the_training_streams_never_show_the_validation_set():
    from muscle_jax.data import digits

    train_labels = digits.load()[1]
    held_out = splits.select_validation_indices(
        train_labels, num_per_class=10, seed=0, num_classes=10
    )
    iterator = _digits_stream(seed=0, num_validation=10)
    seen = set()
    for _ in range(6):  # 6 x 280 unlabeled draws: more than an epoch of the 1,497.
        batch = next(iterator)
        seen |= set(np.asarray(batch["labeled_index"]).tolist())
        seen |= set(np.asarray(batch["unlabeled_index"]).tolist())
    assert not seen & set(held_out.tolist())
    assert len(seen) > 1000


def test_the_unlabeled_pool_counts_follow_the_profile_by_hand():
    # Smallest class 10: class c keeps 10 * 4 ** (-c / 2) = 10, 5, 2.5 -> 2 (floored).
    assert splits.unlabeled_class_counts([10, 12, 15], ratio=4.0).tolist() == [10, 5, 2]
    # Reversed: the last class largest.
    assert splits.unlabeled_class_counts([10, 12, 15], ratio=-4.0).tolist() == [2, 5, 10]
    assert splits.unlabeled_class_counts([10, 12, 15], ratio=1.0).tolist() == [10, 12, 15]
    # Ratio 100 over 10 classes of 150: the tail keeps 1.5 -> 1 image, never 0.
    counts = splits.unlabeled_class_counts([150] * 10, ratio=100.0)
    assert counts[0] == 150 and counts[-1] == 1 and np.all(np.diff(counts) <= 0)
    for bad in (0.5, -1.0, 0.0):
        with pytest.raises(ValueError, match="must be 1"):
            splits.unlabeled_class_counts([10, 12], ratio=bad)


def test_the_imbalanced_pool_is_a_function_of_the_seed_and_reaches_the_stream():
    from muscle_jax.data import digits

    labels = digits.load()[1]
    keep = splits.unlabeled_pool_mask(labels, ratio=10.0, seed=3, num_classes=10)
    sizes = np.bincount(labels, minlength=10)
    expected = splits.unlabeled_class_counts(sizes, ratio=10.0)
    assert np.bincount(labels[keep], minlength=10).tolist() == expected.tolist()
    np.testing.assert_array_equal(
        keep, splits.unlabeled_pool_mask(labels, ratio=10.0, seed=3, num_classes=10)
    )  # Every host draws the same pool from the same labels and seed.
    other = splits.unlabeled_pool_mask(labels, ratio=10.0, seed=4, num_classes=10)
    assert np.any(keep != other)
    iterator = _digits_stream(seed=3, unlabeled_imbalance_ratio=10.0)
    seen = set()
    for _ in range(4):  # 1,120 draws from a pool of ~700: every image at least once.
        seen |= set(np.asarray(next(iterator)["unlabeled_index"]).tolist())
    assert seen == set(np.flatnonzero(keep).tolist())


def test_num_labeled_zero_keeps_every_label_whatever_each_class_holds():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 5)  # Unbalanced: 7, 3, 5.
    every = select_labeled_indices(labels, num_labeled=splits.ALL_LABELED, seed=4)
    np.testing.assert_array_equal(every, np.arange(15))
    held_out = splits.select_validation_indices(labels, num_per_class=1, seed=4, num_classes=3)
    rest = select_labeled_indices(labels, num_labeled=0, seed=4, exclude=held_out)
    assert np.bincount(labels[rest]).tolist() == [6, 2, 4] and not set(rest) & set(held_out)
    with pytest.raises(ValueError, match=r"imbalance_ratio=10\.0 .* num_labeled=0 keeps every"):
        select_labeled_indices(labels, num_labeled=0, seed=4, imbalance_ratio=10.0)
    # A positive count still draws the balanced subset, as it always did.
    assert np.bincount(labels[select_labeled_indices(labels, num_labeled=6, seed=4)]).tolist() == [
        2,
        2,
        2,
    ]
