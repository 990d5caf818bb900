"""The training and evaluation iterators on real digits, in-memory arrays and mock TFDS data."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from muscle_jax import input_pipeline as ip

from .helpers import DIGITS_STREAM, mock_tfds

TRAIN = DIGITS_STREAM


def _tiny_arrays(num_train=40, num_test=13, num_classes=4, shape=(8, 8, 3), **overrides):
    rng = np.random.default_rng(0)
    fields = {
        "name": "tiny",
        "train_images": rng.integers(0, 256, (num_train, *shape), dtype=np.uint8),
        "train_labels": (np.arange(num_train) % num_classes).astype(np.int32),
        "test_images": rng.integers(0, 256, (num_test, *shape), dtype=np.uint8),
        "test_labels": (np.arange(num_test) % num_classes).astype(np.int32),
        "num_classes": num_classes,
    }
    return ip.ArrayDataset(**{**fields, **overrides})


@pytest.fixture(scope="module")
def digits_batches():
    """The first 30 batches of one digits stream (labeled_views=2), shared by several tests."""
    it = ip.make_train_iterator(
        "digits", labeled_views=2, process_count=1, process_index=0, **TRAIN
    )
    return [next(it) for _ in range(30)]


def test_dataset_info_digits():
    info = ip.dataset_info("digits")
    assert info == ip.DatasetInfo("digits", 10, (8, 8, 1), 1497, 300)
    assert info.pool_size == 1497


def test_train_batch_keys_shapes_dtypes_and_ranges(digits_batches):
    batch = digits_batches[0]
    expected = {
        "labeled": ((8, 8, 8, 1), np.float32),
        "labeled_strong": ((8, 8, 8, 1), np.float32),
        "label": ((8,), np.int32),
        "labeled_index": ((8,), np.int32),
        "unlabeled_a": ((16, 8, 8, 1), np.float32),
        "unlabeled_b": ((16, 8, 8, 1), np.float32),
        "unlabeled_index": ((16,), np.int32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    for key in ("labeled", "labeled_strong", "unlabeled_a", "unlabeled_b"):
        assert -1.0 <= batch[key].min() and batch[key].max() <= 1.0
    # Two views of the same unlabeled images differ.
    assert not np.array_equal(batch["unlabeled_a"], batch["unlabeled_b"])


def test_labeled_stream_stays_in_the_labeled_subset_with_true_labels(digits_batches):
    _, train_labels, _, _ = __import__("muscle_jax.data.digits", fromlist=["load"]).load()
    subset = ip.select_labeled_indices(train_labels, num_labeled=50, seed=3)
    seen = np.concatenate([b["labeled_index"] for b in digits_batches])
    assert set(seen) == set(subset)  # 30 batches of 8 cover the 50 several times
    labels = np.concatenate([b["label"] for b in digits_batches])
    np.testing.assert_array_equal(labels, train_labels[seen])


def test_each_epoch_visits_every_unlabeled_example_once(digits_batches):
    seen = np.concatenate([b["unlabeled_index"] for b in digits_batches])
    first_epoch = seen[:1497] if len(seen) >= 1497 else seen
    assert len(set(first_epoch)) == len(first_epoch)  # no repeats within an epoch
    assert seen.max() < 1497 and seen.min() >= 0


def test_same_seed_same_stream_and_resume_equals_uninterrupted(digits_batches):
    resumed = ip.make_train_iterator(
        "digits", labeled_views=2, start_step=23, process_count=1, process_index=0, **TRAIN
    )
    for expected in digits_batches[23:30]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_resume_across_epochs_on_arrays():
    # 40 examples in shuffle blocks of 16, 16 and 8; 12 labeled; batches of 4 labeled and
    # 16 unlabeled: step 13 lies in a later epoch of both streams.
    kw = {**TRAIN, "num_labeled": 12, "labeled_batch_size": 4, "unlabeled_ratio": 4}
    kw["unlabeled_views"] = "weak_weak"  # strong views are resumed in the digits test
    kw["shuffle_buffer_size"] = 16
    it = ip.make_train_iterator(_tiny_arrays(), process_count=1, process_index=0, **kw)
    full = [next(it) for _ in range(16)]
    resumed = ip.make_train_iterator(
        _tiny_arrays(), start_step=13, process_count=1, process_index=0, **kw
    )
    for expected in full[13:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    unlabeled = np.concatenate([b["unlabeled_index"] for b in full])
    for epoch in range(len(unlabeled) // 40):  # every epoch is a permutation of the 40
        assert sorted(unlabeled[40 * epoch : 40 * (epoch + 1)]) == list(range(40))
    assert not np.array_equal(unlabeled[:40], unlabeled[40:80])  # reshuffled each epoch


_FRESH_PROCESS = """
import json, numpy as np, tensorflow as tf
tf.random.set_seed(1234)  # must not matter: the pipeline uses stateless randomness only
from muscle_jax import input_pipeline as ip
it = ip.make_train_iterator("digits", data_dir=None, num_labeled=50, seed=3, labeled_batch_size=8,
    unlabeled_ratio=2, unlabeled_views="weak_strong", labeled_views=2, start_step=2,
    process_index=0, process_count=1)
batch = next(it)
sums = {k: float(np.abs(v.astype(np.float64)).sum()) for k, v in batch.items()}
print("RESULT", json.dumps(sums))
"""


@pytest.mark.slow
def test_stream_is_the_same_in_a_fresh_process_with_another_global_seed(digits_batches):
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
    run = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS], capture_output=True, text=True, env=env,
        timeout=300, check=True,
    )  # fmt: skip
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT"))
    got = json.loads(line[len("RESULT ") :])
    expected = {k: float(np.abs(v.astype(np.float64)).sum()) for k, v in digits_batches[2].items()}
    assert got == expected


def test_other_seed_other_stream(digits_batches):
    kw = {**TRAIN, "seed": 4, "unlabeled_views": "none"}
    it = ip.make_train_iterator("digits", process_count=1, process_index=0, **kw)
    assert not np.array_equal(next(it)["labeled_index"], digits_batches[0]["labeled_index"])


def test_views_weak_weak_and_supervised_only():
    data = _tiny_arrays()
    kw = {**TRAIN, "num_labeled": 8, "process_count": 1, "process_index": 0}
    weak_weak = next(ip.make_train_iterator(data, **{**kw, "unlabeled_views": "weak_weak"}))
    assert set(weak_weak) == {
        "labeled",
        "label",
        "labeled_index",
        "unlabeled_a",
        "unlabeled_b",
        "unlabeled_index",
    }
    none = next(ip.make_train_iterator(data, **{**kw, "unlabeled_views": "none"}))
    assert set(none) == {"labeled", "label", "labeled_index"}


def test_exclude_labeled_from_unlabeled():
    data = _tiny_arrays()
    kw = {**TRAIN, "num_labeled": 8, "process_count": 1, "process_index": 0}
    kw["unlabeled_views"] = "weak_weak"
    kw["shuffle_buffer_size"] = 8  # blocks of 8, some partly excluded
    it = ip.make_train_iterator(data, exclude_labeled_from_unlabeled=True, **kw)
    batches = [next(it) for _ in range(4)]  # 64 unlabeled draws > 2 epochs of 32
    labeled = set(np.concatenate([b["labeled_index"] for b in batches]))
    unlabeled = np.concatenate([b["unlabeled_index"] for b in batches])
    assert not labeled & set(unlabeled)
    assert set(unlabeled[:32]) == set(range(40)) - labeled


def test_two_processes_read_disjoint_shards_that_cover_the_data():
    data = _tiny_arrays(num_train=41)  # odd size: shards of 20 and 21
    kw = {**TRAIN, "num_labeled": 12, "labeled_batch_size": 4, "unlabeled_ratio": 2}
    kw["unlabeled_views"] = "weak_weak"
    streams = [
        ip.make_train_iterator(data, process_index=p, process_count=2, **kw) for p in range(2)
    ]
    # 12 batches of 4 unlabeled per process = 48 draws > 2 epochs of each shard.
    per_process = [[next(s) for _ in range(12)] for s in streams]
    unlabeled = [set(np.concatenate([b["unlabeled_index"] for b in bs])) for bs in per_process]
    labeled = [set(np.concatenate([b["labeled_index"] for b in bs])) for bs in per_process]
    assert not unlabeled[0] & unlabeled[1]
    assert unlabeled[0] | unlabeled[1] == set(range(41))
    assert not labeled[0] & labeled[1]
    subset = ip.select_labeled_indices(data.train_labels, num_labeled=12, seed=TRAIN["seed"])
    assert labeled[0] | labeled[1] == set(subset)
    assert per_process[0][0]["labeled"].shape[0] == 2  # global 4 / 2 processes


@pytest.mark.parametrize(
    ("num_test", "batch", "count"), [(300, 64, 1), (13, 4, 1), (13, 4, 2), (13, 6, 3)]
)
def test_eval_covers_every_test_example_exactly_once(num_test, batch, count):
    data = "digits" if num_test == 300 else _tiny_arrays(num_test=num_test)
    labels = []
    lengths = set()
    for p in range(count):
        batches = list(
            ip.make_eval_iterator(
                data, data_dir=None, batch_size=batch, process_index=p, process_count=count
            )
        )
        lengths.add(len(batches))
        for b in batches:
            assert b["image"].shape[0] == batch // count and b["mask"].dtype == bool
            assert np.all(b["image"][~b["mask"]] == 0)
            labels.append(b["label"][b["mask"]])
    assert len(lengths) == 1  # every process yields the same number of batches
    assert sum(len(x) for x in labels) == num_test
    if num_test != 300:
        np.testing.assert_array_equal(
            np.sort(np.concatenate(labels)), np.sort(_tiny_arrays(num_test=num_test).test_labels)
        )


def test_sharded_batches_are_global_jax_arrays():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = NamedSharding(mesh, P("data"))
    kw = {**TRAIN, "num_labeled": 16, "process_count": 1, "process_index": 0}
    kw["unlabeled_views"] = "weak_weak"
    batch = next(ip.make_train_iterator(_tiny_arrays(), sharding=sharding, **kw))
    assert isinstance(batch["labeled"], jax.Array)
    assert batch["unlabeled_b"].shape == (16, 8, 8, 3)
    assert batch["labeled"].sharding == sharding
    evaluation = next(
        ip.make_eval_iterator(
            _tiny_arrays(),
            data_dir=None,
            batch_size=8,
            sharding=sharding,
            process_count=1,
            process_index=0,
        )
    )
    assert evaluation["mask"].sharding == sharding


def test_batch_sizes_must_divide_processes_and_devices():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = NamedSharding(mesh, P("data"))
    data = _tiny_arrays()
    kw = {**TRAIN, "num_labeled": 8}
    with pytest.raises(ValueError, match=r"labeled_batch_size=9 .*process count 2"):
        ip.make_train_iterator(
            data, **{**kw, "labeled_batch_size": 9}, process_index=0, process_count=2
        )
    with pytest.raises(ValueError, match=r"labeled_batch_size=4 .*8 devices"):
        ip.make_train_iterator(
            data,
            **{**kw, "labeled_batch_size": 4},
            sharding=sharding,
            process_index=0,
            process_count=1,
        )
    with pytest.raises(ValueError, match=r"batch_size=6 .*8 devices"):
        ip.make_eval_iterator(
            data, data_dir=None, batch_size=6, sharding=sharding, process_index=0, process_count=1
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_labels": np.array([0, 1, 2, 7] * 10, np.int32)}, r"labels outside \[0, 4\)"),
        ({"train_labels": np.array([0, -1, 2, 3] * 10, np.int32)}, r"labels outside \[0, 4\)"),
        ({"train_images": np.zeros((40, 8, 8), np.uint8)}, r"must be \[N, H, W, C\]"),
        ({"train_images": np.zeros((40, 8, 8, 3), np.float32)}, "must be uint8"),
        ({"test_images": np.zeros((13, 9, 9, 3), np.uint8)}, r"test images have shape \(9, 9, 3\)"),
        ({"train_labels": np.zeros(39, np.int32)}, "40 images but labels of shape"),
        (
            {
                "train_images": np.zeros((0, 8, 8, 3), np.uint8),
                "train_labels": np.zeros(0, np.int32),
            },
            "is empty",
        ),
    ],
)
def test_bad_in_memory_data_is_a_clear_error(overrides, message):
    with pytest.raises(ip.DataValidationError, match=message):
        ip.make_train_iterator(_tiny_arrays(**overrides), **TRAIN)


def test_num_classes_mismatch_and_bad_options():
    with pytest.raises(ValueError, match=r"num_classes=100 .* 'digits', which has 10 classes"):
        ip.make_train_iterator("digits", num_classes=100, **TRAIN)
    with pytest.raises(ValueError, match="num_classes=3"):
        ip.make_eval_iterator("digits", data_dir=None, batch_size=8, num_classes=3)
    with pytest.raises(ValueError, match="unlabeled_views"):
        ip.make_train_iterator("digits", **{**TRAIN, "unlabeled_views": "strong"})
    with pytest.raises(ValueError, match="Class 0 holds"):
        ip.make_train_iterator(_tiny_arrays(), **{**TRAIN, "num_labeled": 400})


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_mock_cifar_through_tfds(name, tmp_path):
    num_classes = {"cifar10": 10, "cifar100": 100}[name]
    # mock_data makes download_and_prepare a no-op, and its builders never look
    # prepared, so download=True is what lets the mocked reads through.
    with mock_tfds(num_examples=num_classes * 2):
        info = ip.dataset_info(name, data_dir=str(tmp_path), download=True)
        assert (info.num_classes, info.image_shape) == (num_classes, (32, 32, 3))
        assert (info.num_train, info.num_test) == (num_classes * 2, num_classes * 2)
        it = ip.make_train_iterator(
            name, data_dir=str(tmp_path), num_labeled=num_classes, seed=0,
            labeled_batch_size=4, unlabeled_ratio=2, unlabeled_views="weak_strong",
            num_classes=num_classes, download=True, process_index=0, process_count=1,
        )  # fmt: skip
        batch = next(it)
        evaluation = list(
            ip.make_eval_iterator(
                name,
                data_dir=str(tmp_path),
                batch_size=8,
                download=True,
                process_index=0,
                process_count=1,
            )
        )
    assert batch["labeled"].shape == (4, 32, 32, 3)
    assert batch["unlabeled_b"].shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(batch["label"], batch["labeled_index"] % num_classes)
    assert sum(int(b["mask"].sum()) for b in evaluation) == info.num_test


def test_mock_with_random_labels_and_num_classes_mismatch(tmp_path):
    with tfds.testing.mock_data(num_examples=100):
        batch = next(
            ip.make_train_iterator(
                "cifar10", data_dir=str(tmp_path), num_labeled=10, seed=0,
                labeled_batch_size=2, unlabeled_ratio=1, unlabeled_views="none",
                download=True, process_index=0, process_count=1,
            )
        )  # fmt: skip
        assert batch["labeled"].shape == (2, 32, 32, 3)
        with pytest.raises(ValueError, match=r"num_classes=100 .*'cifar10', which has 10"):
            ip.make_train_iterator(
                "cifar10", **{**TRAIN, "data_dir": str(tmp_path)}, num_classes=100, download=True
            )


def test_mock_stl10_unlabeled_split_joins_the_unlabeled_stream(tmp_path):
    with mock_tfds(num_examples=10):
        info = ip.dataset_info("stl10", data_dir=str(tmp_path), download=True)
        assert info.image_shape == (96, 96, 3) and info.num_unlabeled_only == 10
        it = ip.make_train_iterator(
            "stl10", data_dir=str(tmp_path), num_labeled=10, seed=0, labeled_batch_size=2,
            unlabeled_ratio=5, unlabeled_views="weak_weak", download=True, process_index=0,
            process_count=1,
        )  # fmt: skip
        seen = np.concatenate([next(it)["unlabeled_index"] for _ in range(2)])
    assert set(seen) == set(range(info.pool_size))  # train 0..9 and unlabeled 10..19


@pytest.mark.slow
def test_fixed_data_shards_give_the_same_global_batch_at_any_process_count():
    """With num_shards fixed, 1 or 2 processes together yield the same global batches."""
    kw = {**TRAIN, "num_shards": 4, "start_step": 5}  # Resumed mid-stream, too.

    def global_batches(count, steps=2):
        streams = [
            ip.make_train_iterator("digits", process_index=i, process_count=count, **kw)
            for i in range(count)
        ]
        return [
            {key: np.concatenate([next_batch[key] for next_batch in parts]) for key in parts[0]}
            for parts in ([next(stream) for stream in streams] for _ in range(steps))
        ]

    for a, b in zip(global_batches(1), global_batches(2), strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # One shard per process (the default) is the stream each process read before shards.
    default = next(ip.make_train_iterator("digits", process_index=1, process_count=2, **TRAIN))
    explicit = next(
        ip.make_train_iterator("digits", process_index=1, process_count=2, num_shards=2, **TRAIN)
    )
    for key in default:
        np.testing.assert_array_equal(default[key], explicit[key], err_msg=key)


@pytest.mark.parametrize(
    "num_shards, message",
    [(3, "multiple of the 2 processes"), (16, "does not split into its 8 data shards")],
)
def test_data_shards_that_do_not_fit_are_refused(num_shards, message):
    with pytest.raises(ip.DataRequestError, match=message):
        ip.make_train_iterator(
            "digits", process_index=0, process_count=2, num_shards=num_shards, **TRAIN
        )
