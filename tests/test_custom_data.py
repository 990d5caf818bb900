"""Your own data and model with no code: an image folder, an .npz, any TFDS dataset, a backbone.

The pictures are made here: three classes a child could tell apart (a bright
left half, a bright top half, a bright centre) under noise, so a few dozen
steps of a small network learn them. The end-to-end runs go through
``python -m muscle_jax.main``'s own entry point, three command lines in one
interpreter (tests/cli_driver.py), as a user would type them.
"""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from muscle_jax.data import files, sources
from muscle_jax.data.validation import DataRequestError, DataValidationError

from . import cli_driver
from .helpers import ONE_THREAD_TENSORFLOW, xla_flags
from .test_docs_custom import command, snippet

CLASSES = ("centre", "left", "top")  # Sorted, as the folder names are read.
SIZE = 16
SEEDS = {"train": 1, "test": 2}


def pictures(label: int, count: int, seed: int, *, size: int = SIZE, channels: int = 1):
    """``count`` uint8 [size, size, channels] pictures of class ``label`` (see module docstring)."""
    rng = np.random.default_rng([seed, label])
    images = rng.uniform(0, 90, (count, size, size, 1))
    half, quarter = size // 2, size // 4
    if CLASSES[label] == "left":
        images[:, :, :half] += 150
    elif CLASSES[label] == "top":
        images[:, :half] += 150
    else:
        images[:, quarter:-quarter, quarter:-quarter] += 150
    images = np.clip(images, 0, 255).astype(np.uint8)
    return np.repeat(images, channels, axis=-1)


def write_image(path, image, *, jpeg=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_jpeg if jpeg else tf.io.encode_png
    tf.io.write_file(str(path), encode(image, quality=95) if jpeg else encode(image))


def make_image_folder(root, *, train=30, test=10, unlabeled=12):
    """Train and test folders by class (PNG and JPEG, grey and RGB, two sizes) + unlabeled."""
    for label, name in enumerate(CLASSES):
        for split, count in (("train", train), ("test", test)):
            for index, image in enumerate(pictures(label, count, seed=SEEDS[split])):
                # Every third image is an RGB JPEG of twice the size: resized by image_size.
                if index % 3 == 2:
                    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
                    write_image(
                        root / split / name / f"{index}.jpg", np.repeat(big, 3, -1), jpeg=True
                    )
                else:
                    write_image(root / split / name / f"{index}.png", image)
    for index in range(unlabeled):
        image = pictures(index % 3, 1, seed=500 + index)[0]
        write_image(root / "unlabeled" / f"batch_{index % 2}" / f"{index}.png", image)
    (root / "train" / "left" / "notes.txt").write_text("not an image: left out with a warning")
    return root


def make_one_size_folder(root, *, train=(60, 50, 40), test=10):
    """Grey 16x16 PNGs only, ``train[k]`` of class k (unbalanced) and ``test`` of each."""
    for label, name in enumerate(CLASSES):
        for split, count in (("train", train[label]), ("test", test)):
            for index, image in enumerate(pictures(label, count, seed=SEEDS[split])):
                write_image(root / split / name / f"{index}.png", image)
    return root


# ---------------------------------------------------------------- image folders


def test_an_image_folder_reads_classes_channels_sizes_and_the_unlabeled_pool(tmp_path):
    root = make_image_folder(tmp_path / "pets", train=6, test=3, unlabeled=4)
    data = files.load(str(root), image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert data.class_names == CLASSES and data.num_classes == 3
    # A mix of grey and RGB files is made RGB; every image is resized to 16 x 16.
    assert data.train_images.shape == (18, SIZE, SIZE, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (9, SIZE, SIZE, 3)
    assert data.unlabeled_images.shape == (4, SIZE, SIZE, 3)
    np.testing.assert_array_equal(data.train_labels, np.repeat([0, 1, 2], 6))
    # The PNG of class "left" is what was written (lossless, already 16 x 16).
    expected = pictures(1, 6, seed=SEEDS["train"])[0]
    np.testing.assert_array_equal(data.train_images[6], np.repeat(expected, 3, -1))
    info = sources.open_source(data).info
    assert info.class_names == CLASSES and info.num_unlabeled_only == 4


def test_an_image_folder_is_decoded_once_and_a_changed_folder_again(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "pets", train=3, test=2, unlabeled=0)
    cache = tmp_path / "cache"
    first = files.load(str(root), image_size=SIZE, cache_dir=str(cache))
    assert len(list(cache.glob("pets_*.npz"))) == 1

    def no_decoding(file):
        raise AssertionError(f"decoded {file} again")

    monkeypatch.setattr(files, "_decode", no_decoding)
    again = files.load(str(root), image_size=SIZE, cache_dir=str(cache))
    np.testing.assert_array_equal(again.train_images, first.train_images)
    monkeypatch.undo()
    write_image(root / "train" / "top" / "new.png", pictures(2, 1, seed=9)[0])
    changed = files.load(str(root), image_size=SIZE, cache_dir=str(cache))
    assert len(changed.train_labels) == len(first.train_labels) + 1
    assert len(list(cache.glob("pets_*.npz"))) == 2


def test_max_image_size_shrinks_only_the_larger_images(tmp_path):
    root = make_image_folder(tmp_path / "pets", train=3, test=2, unlabeled=2)  # 16 and 32 px.
    data = files.load(str(root), image_size=None, max_image_size=SIZE, cache_dir=None)
    assert data.train_images.shape[1:3] == data.unlabeled_images.shape[1:3] == (SIZE, SIZE)
    # The PNGs already 16x16 are kept as they were (only the JPEGs shrank).
    np.testing.assert_array_equal(data.train_images[0], np.repeat(pictures(0, 1, 1)[0], 3, -1))
    with pytest.raises(DataValidationError, match=r"is 16x16 but .* is 32x32|is 32x32 but"):
        files.load(str(root), image_size=None, max_image_size=2 * SIZE, cache_dir=None)
    path = make_npz(tmp_path / "shapes.npz", train=2, test=1)
    assert files.load(
        str(path), image_size=None, max_image_size=8, cache_dir=None
    ).train_images.shape[1:3] == (8, 8)
    kept = files.load(str(path), image_size=None, max_image_size=32, cache_dir=None)
    assert kept.train_images.shape[1:3] == (SIZE, SIZE)


def _folder_with(tmp_path, change):
    root = make_image_folder(tmp_path / "pets", train=3, test=1, unlabeled=0)
    change(root)
    return root


@pytest.mark.parametrize(
    "change, image_size, message",
    [
        (lambda r: (r / "train" / "empty").mkdir(), SIZE, r"train/empty has no images"),
        (lambda r: (r / "test" / "zebra").mkdir(), SIZE, r"test classes \['zebra'\] have no"),
        (
            lambda r: (r / "train" / "top" / "broken.png").write_bytes(b"not a png"),
            SIZE,
            r"Cannot read the image .*broken\.png",
        ),
        (lambda r: None, None, r"2\.jpg is 32x32 but .*0\.png is 16x16.*data\.image_size"),
        (lambda r: (r / "train" / "loose.png").write_bytes(b""), SIZE, "outside any class"),
        (lambda r: os.rename(r / "test", r / "tests"), SIZE, "has no test/ folder"),
    ],
    ids=["empty class", "class only in test", "unreadable file", "mixed sizes", "loose file",
         "no test split"],
)  # fmt: skip
def test_a_bad_image_folder_is_refused_naming_the_problem(tmp_path, change, image_size, message):
    root = _folder_with(tmp_path, change)
    with pytest.raises(DataValidationError, match=message):
        files.load(str(root), image_size=image_size, cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()  # Nothing written.


# ---------------------------------------------------------------- .npz arrays


def make_npz(path, *, train=30, test=10, **extra):
    x = {split: np.concatenate([pictures(c, n, seed=s) for c in range(3)])
         for split, n, s in (("train", train, 1), ("test", test, 2))}  # fmt: skip
    y = {split: np.repeat(np.arange(3), n) for split, n in (("train", train), ("test", test))}
    arrays = {"x_train": x["train"][..., 0], "y_train": y["train"], "x_test": x["test"],
              "y_test": y["test"], "x_unlabeled": pictures(0, 6, seed=3)}  # fmt: skip
    arrays.update(extra)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def test_an_npz_gives_grey_arrays_classes_and_unlabeled_images(tmp_path):
    path = make_npz(tmp_path / "shapes.npz", train=4, test=2, class_names=np.array(CLASSES))
    data = files.load(str(path), image_size=None, cache_dir=None)
    assert data.name == "shapes" and data.num_classes == 3 and data.class_names == CLASSES
    assert data.train_images.shape == (12, SIZE, SIZE, 1)  # [N, H, W] gets its channel axis.
    assert data.unlabeled_images.shape == (6, SIZE, SIZE, 1)


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"y_test": None}, "lacks y_test"),
        ({"y_train": -np.ones(12, np.int64)}, "labels must be 0, 1, 2"),
        ({"x_test": np.zeros((6, SIZE, SIZE, 1), np.float32)}, "must be uint8"),
        ({"y_train": np.zeros((12, 2), np.int64)}, "1-D integer array"),
    ],
)
def test_a_bad_npz_is_refused_naming_the_array(tmp_path, extra, message):
    path = make_npz(tmp_path / "bad.npz", train=4, test=2, **extra)
    with pytest.raises(DataValidationError, match=message):
        files.load(str(path), image_size=None, cache_dir=None)


def test_a_path_that_is_not_there_or_not_data_is_refused(tmp_path):
    with pytest.raises(DataRequestError, match="does not exist"):
        files.load(str(tmp_path / "nowhere"), image_size=None, cache_dir=None)
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(DataRequestError, match="neither a directory"):
        files.load(str(tmp_path / "data.csv"), image_size=None, cache_dir=None)


# ---------------------------------------------------------------- any TFDS dataset


class ShapesThree(tfds.core.GeneratorBasedBuilder):
    """A TFDS dataset the table does not know, with its own feature names and no test split."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "picture": tfds.features.Image(shape=(SIZE, SIZE, 1)),
                    "kind": tfds.features.ClassLabel(names=list(CLASSES)),
                }
            )
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(30, 1),
            "validation": self._generate_examples(10, 2),
        }

    def _generate_examples(self, per_class, seed):
        for label in range(3):
            for index, image in enumerate(pictures(label, per_class, seed=seed)):
                yield f"{label}_{index}", {"picture": image, "kind": label}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    ShapesThree(data_dir=str(data_dir)).download_and_prepare()
    return data_dir


def test_a_tfds_dataset_outside_the_table_is_read_from_its_metadata(tfds_dir):
    info = sources.open_source("shapes_three", data_dir=str(tfds_dir)).info
    assert (info.num_classes, info.image_shape, info.num_train, info.num_test) == (
        3,
        (SIZE, SIZE, 1),
        90,
        30,  # The validation split: the dataset has no test split.
    )
    assert info.class_names == CLASSES


def test_an_unknown_dataset_name_says_what_would_work(tmp_path):
    with pytest.raises(DataRequestError, match=r"Unknown dataset 'cifar11'.*data\.path") as error:
        sources.open_source("cifar11", data_dir=str(tmp_path))
    assert "cifar10" in str(error.value)


# ---------------------------------------------------------------- end to end, through the CLI

# The backbone of docs/custom.md, as a user's module on PYTHONPATH.
BACKBONE = snippet("backbone")

# The same short schedule for every end-to-end run: enough to learn the three shapes.
SHORT = [
    "--config.total_steps=60",
    "--config.eval_every_steps=30",
    "--config.checkpoint_every_steps=60",
    "--config.data.batch_size=12",
    "--config.data.unlabeled_ratio=2",
    "--config.data.eval_batch_size=32",
    "--config.optimizer.warmup_steps=0",
    "--config.data.flip=False",  # A mirrored "left" is no class at all.
    "--config.ema_decay=0.9",  # The EMA model of a 60-step run: a short average.
]
SMALL_CNN = ["--config.model.name=small_cnn", "--config.model.kwargs.widths=(16, 32, 32)"]


@pytest.fixture(scope="module")
def end_to_end_runs(tmp_path_factory, tfds_dir):
    """Three runs of ``python -m muscle_jax.main`` a user would type, one interpreter."""
    root = tmp_path_factory.mktemp("custom")
    folder = make_image_folder(root / "pets")
    npz = make_npz(root / "shapes.npz", class_names=np.array(CLASSES))
    (root / "mynets.py").write_text(BACKBONE)
    command_lines = {
        "folder": [
            "--config=configs/image_folder.py:num_labeled=15,image_size=16",
            f"--config.data.path={folder}",
            "--config.model.name=mynets:TwoConvs",
        ],
        "npz": [
            "--config=configs/image_folder.py:num_labeled=15,image_size=0",
            f"--config.data.path={npz}",
            *SMALL_CNN,
            "--config.model.kwargs.dropout_rate=0.3",  # A rate above 0 trains.
            "--config.data.num_validation=4",  # 4 a class held out of the 90.
        ],
        "tfds": [
            "--config=configs/image_folder.py:num_labeled=15,image_size=0",
            "--config.data.name=shapes_three",
            f"--config.data.data_dir={tfds_dir}",
            *SMALL_CNN,
        ],
    }
    workdirs = {name: root / f"run_{name}" for name in command_lines}
    outcomes = cli_driver.run_command_lines(
        "muscle_jax.main",
        [[*args, *SHORT, f"--workdir={workdirs[name]}"] for name, args in command_lines.items()],
        # One CPU device, as a user's machine has (the test session simulates eight).
        env={
            **os.environ,
            "XLA_FLAGS": xla_flags(),
            "PYTHONPATH": f"{root}{os.pathsep}{cli_driver.REPO}",
        },
    )
    return {name: (workdirs[name], outcome) for name, outcome in zip(command_lines, outcomes)}


@pytest.mark.slow(heavy=True)
@pytest.mark.parametrize("name", ["folder", "npz", "tfds"])
def test_your_data_trains_through_the_command_line(end_to_end_runs, name):
    workdir, outcome = end_to_end_runs[name]
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    # Three shapes under noise: every run learns them (measured: docs/custom.md). The
    # EMA model of 60 steps (decay 0.9) lags the raw one: above chance, not more.
    assert results["raw_accuracy"] >= 0.9 and results["accuracy"] > 0.5, results["history"]
    assert results["class_names"] == list(CLASSES)
    assert results["config"]["data"]["num_classes"] == 3  # Read from the data.
    summary = (workdir / "summary.md").read_text()
    assert "| centre |" in summary and "| top |" in summary
    if name == "npz":  # The held-out validation set and the test accuracy it chooses.
        chosen = results["validation"]
        assert chosen["num_examples"] == 12 and chosen["best_step"] in (30, 60)
        index = results["history"]["step"].index(chosen["best_step"])
        assert chosen["test_accuracy"] == results["history"]["ema_accuracy"][index]
        assert chosen["validation_accuracy"] == max(results["history"]["val_ema_accuracy"])
        assert "Chosen by the validation set (12 held-out" in summary
    else:
        assert results["validation"] is None
    if name == "folder":
        assert results["config"]["model"]["name"] == "mynets:TwoConvs"
        assert not results["config"]["model"]["kwargs"]  # Not the CPU profile's CNN widths.
        assert list((workdir / "data_cache").glob("pets_*.npz"))  # Decoded once, kept.


@pytest.mark.slow(heavy=True)
def test_the_documented_folder_command_trains_every_image_of_train_on_a_cpu(tmp_path):
    """docs/custom.md's command, as written, on 3 unbalanced classes of 16x16 images.

    In a user's environment: one CPU device, XLA's optimisations and thread
    pools as they come (the session turns both off for its tiny programs; this
    run's convolutions took 5x longer without them).
    """
    shapes = make_one_size_folder(tmp_path / "shapes")
    workdir = tmp_path / "mine"
    test_only = ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS", *ONE_THREAD_TENSORFLOW)
    (outcome,) = cli_driver.run_command_lines(
        "muscle_jax.main",
        [command("image_folder", DIR=str(shapes), **{"/tmp/mine": str(workdir)})],
        env={key: value for key, value in os.environ.items() if key not in test_only},
        timeout=1200,  # ~1 min on 2 idle cores, 6 on the loaded machine it was written on.
    )
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    config = results["config"]
    # The CPU profile: the small CNN at the images' own size, the EMA fitted to the run.
    assert config["model"]["name"] == "small_cnn" and config["data"]["max_image_size"] == 32
    assert results["steps"] == config["total_steps"] == 300 and results["ema_note"] is None
    # Every image of train/ labeled, whatever each class holds; all of it unlabeled too.
    assert config["data"]["num_labeled"] == 0 and results["labeled_per_class"] == [60, 50, 40]
    assert results["unlabeled_pool"]["per_class"] == [60, 50, 40]
    assert results["accuracy"] >= 0.9 and results["raw_accuracy"] >= 0.9, results["history"]
    summary = (workdir / "summary.md").read_text()
    assert "every training image labeled: 150" in summary and "**Note:**" not in summary


# ---------------------------------------------------------------- backbones that break the contract

BROKEN_BACKBONES = """
import jax.numpy as jnp
from flax import nnx


class NoWidth(nnx.Module):
    def __init__(self, *, in_channels, rngs):
        self.conv = nnx.Conv(in_channels, 4, (3, 3), rngs=rngs)

    def __call__(self, images, *, train):
        return self.conv(images).mean(axis=(1, 2))


class OwnRngs(nnx.Module):
    def __init__(self, *, in_channels, rngs):
        self.conv = nnx.Conv(in_channels, 4, (3, 3), rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.num_features = 4

    def __call__(self, images, *, train):
        return self.drop(self.conv(images).mean(axis=(1, 2)), deterministic=not train)


class MapNotVector(nnx.Module):
    def __init__(self, *, in_channels, rngs):
        self.conv = nnx.Conv(in_channels, 4, (3, 3), rngs=rngs)
        self.num_features = 4

    def __call__(self, images, *, train):
        return self.conv(images)


NOT_A_MODULE = 3
"""


@pytest.mark.parametrize(
    "name, message",
    [
        ("broken:NoWidth", "integer attribute num_features"),
        ("broken:OwnRngs", r"variables other than nnx.Param and nnx.BatchStat: drop\.rngs"),
        ("broken:MapNotVector", r"returned \(2, 16, 16, 4\).*\[batch, num_features\]"),
        ("broken:NOT_A_MODULE", "no flax.nnx.Module class 'NOT_A_MODULE'"),
        ("not_there:Net", "cannot import 'not_there'.*PYTHONPATH"),
        ("broken:", "write it as module:Class"),
    ],
)
def test_a_backbone_that_breaks_the_contract_is_refused(tmp_path, monkeypatch, name, message):
    from flax import nnx

    from muscle_jax import config_validation, models
    from tests.helpers import load_config

    (tmp_path / "broken.py").write_text(BROKEN_BACKBONES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken", raising=False)
    with pytest.raises(models.UserModelError, match=message):
        model = nnx.eval_shape(
            lambda: models.create_model(name, num_classes=3, rngs=nnx.Rngs(0), in_channels=1)
        )
        models.user.check_contract(model, (16, 16, 1), name)
    if name.startswith("not_there") or name.endswith(":"):
        # Caught with the config's other checks, before TensorFlow or the data.
        config = load_config("tiny")
        config.model.name = name
        with pytest.raises(config_validation.ConfigError, match=message):
            config_validation.validate_config(config, num_devices=1)


def test_a_class_with_too_few_images_is_refused_before_the_workdir(tmp_path):
    from muscle_jax import input_pipeline, train
    from tests.helpers import load_config

    labels = np.array([0] * 20 + [1] * 20 + [2] * 3)  # Class 2: 3 images.
    images = np.zeros((len(labels), SIZE, SIZE, 1), np.uint8)
    dataset = input_pipeline.ArrayDataset("few", images, labels, images, labels, num_classes=3)
    config = load_config("tiny")
    config.data.num_classes = 0
    config.data.num_labeled = 15  # 5 a class: more than class 2 holds.
    with pytest.raises(DataRequestError, match="Class 2 holds 3 examples"):
        train.train_and_evaluate(config, str(tmp_path / "run"), source=dataset)
    assert not (tmp_path / "run").exists()
