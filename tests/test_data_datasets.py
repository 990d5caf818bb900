"""Datasets by name: fast, clear errors for missing data; the Mini-ImageNet builder; TFDS shards."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from muscle_jax import input_pipeline as ip
from muscle_jax.data import catalog, mini_imagenet, sources


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn_cropped", "stl10", "mnist"])
def test_missing_dataset_fails_fast_naming_dataset_dir_and_fix(name, tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("download_and_prepare must not run when download=False")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    data_dir = str(tmp_path / "empty_tfds")
    start = time.perf_counter()
    with pytest.raises(ip.DatasetNotFoundError) as error:
        ip.dataset_info(name, data_dir=data_dir)
    seconds = time.perf_counter() - start
    # Fast: no retry loop (those take minutes); 2 s failed once on a loaded machine.
    assert seconds < 20.0, f"missing-dataset error took {seconds:.2f} s"
    message = str(error.value)
    assert repr(name) in message and data_dir in message
    assert "tfds build" in message and "--config.data.data_dir" in message
    assert isinstance(error.value, FileNotFoundError)


def test_missing_dataset_error_from_the_iterators(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="cifar10"):
        ip.make_train_iterator(
            "cifar10", data_dir=str(tmp_path), num_labeled=40, seed=0, labeled_batch_size=8,
            unlabeled_ratio=7, unlabeled_views="weak_strong", process_index=0, process_count=1,
        )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="cifar10"):
        ip.make_eval_iterator("cifar10", data_dir=str(tmp_path), batch_size=8)
    assert time.perf_counter() - start < 4.0


def test_missing_mini_imagenet_explains_the_manual_steps(tmp_path):
    with pytest.raises(ip.DatasetNotFoundError, match="manual_dir") as error:
        ip.dataset_info("mini_imagenet", data_dir=str(tmp_path))
    assert "--imports=muscle_jax.data.mini_imagenet" in str(error.value)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar11'") as error:
        ip.dataset_info("cifar11")
    for name in catalog.CATALOG:
        assert name in str(error.value)


def test_catalog_flip_policy():
    assert not catalog.lookup("digits").flip and not catalog.lookup("mnist").flip
    assert not catalog.lookup("svhn_cropped").flip
    assert catalog.lookup("cifar10").flip and catalog.lookup("fashion_mnist").flip


TRAIN_PER_CLASS, TEST_PER_CLASS, CLASSES = 3, 2, 3


@pytest.fixture(scope="module")
def tiny_mini_imagenet(tmp_path_factory):
    """A 3-class Mini-ImageNet built from a fake manual dir of odd-sized JPEGs and PNGs."""
    root = tmp_path_factory.mktemp("mini")
    manual = root / "manual"
    for cls in range(CLASSES):
        folder = manual / f"n0{cls}"
        folder.mkdir(parents=True)
        for i in range(TRAIN_PER_CLASS + TEST_PER_CLASS):
            pixels = np.full((100, 90, 3), 40 * cls + 5 * i, np.uint8)
            Image.fromarray(pixels).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
        (folder / "notes.txt").write_text("not an image")
    config = mini_imagenet.MiniImagenetConfig(
        name="tiny", train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS,
        num_classes=CLASSES,
    )  # fmt: skip
    builder = mini_imagenet.MiniImagenet(config=config, data_dir=str(root / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    return builder


def test_mini_imagenet_builder_splits_per_class(tiny_mini_imagenet):
    info = tiny_mini_imagenet.info
    assert info.features["image"].shape == (84, 84, 3)
    assert info.splits["train"].num_examples == CLASSES * TRAIN_PER_CLASS
    assert info.splits["test"].num_examples == CLASSES * TEST_PER_CLASS
    test = list(tiny_mini_imagenet.as_dataset(split="test").as_numpy_iterator())
    # Sorted file names per class: img3, img4 are the test images.
    assert sorted(ex["file_name"].decode().split("/")[1] for ex in test) == sorted(
        ["img3.png", "img4.jpg"] * CLASSES
    )
    assert np.bincount([ex["label"] for ex in test]).tolist() == [TEST_PER_CLASS] * CLASSES


def test_mini_imagenet_builder_rejects_wrong_counts(tmp_path):
    manual = tmp_path / "manual"
    (manual / "n00").mkdir(parents=True)
    Image.fromarray(np.zeros((84, 84, 3), np.uint8)).save(manual / "n00" / "a.jpg")
    config = mini_imagenet.MiniImagenetConfig(name="bad", num_classes=1)
    builder = mini_imagenet.MiniImagenet(config=config, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="holds 1 images, expected 600"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
        )


def test_tfds_source_two_process_shards_are_disjoint_and_cover(tiny_mini_imagenet):
    source = sources.TfdsSource(
        "mini_imagenet", data_dir=None, download=False, builder=tiny_mini_imagenet
    )
    assert source.info.image_shape == (84, 84, 3) and source.info.num_classes == CLASSES
    labels = source.train_labels()
    n = source.info.num_train
    shards = [(0, n // 2), (n // 2, n)]  # what make_train_iterator cuts for 2 processes
    seen = []
    for start, end in shards:
        for ex in source.read("pool", start, end).as_numpy_iterator():
            assert ex["label"] == labels[ex["index"]]
            seen.append(int(ex["index"]))
    assert sorted(seen) == list(range(n))
    picked = ip.select_labeled_indices(labels, num_labeled=CLASSES, seed=0)
    images, picked_labels = source.gather_train(picked)
    assert images.shape == (CLASSES, 84, 84, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(picked_labels, labels[picked])


def test_a_data_dir_for_the_embedded_digits_is_said_to_be_unused(tmp_path, caplog):
    from muscle_jax.data import sources

    sources.open_source("digits", data_dir=str(tmp_path))
    said = [r.getMessage() for r in caplog.records if "is not read" in r.getMessage()]
    assert len(said) == 1 and str(tmp_path) in said[0] and "data.path" in said[0]
