"""Every config in configs/ loads, validates on 8 devices and keeps its defaults; bad configs fail.

Configs are loaded the way ``ml_collections.config_flags`` loads them: the
file imported by path, then ``get_config(arg)``.
"""

import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from muscle_jax import config_defaults, models
from muscle_jax.config_validation import (
    ConfigError,
    validate_against_dataset,
    validate_config,
    with_dataset_facts,
)
from tests import cli_driver
from tests.helpers import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
CONFIG_FILES = sorted(path.name for path in CONFIG_DIR.glob("*.py"))
NUM_DEVICES = 8  # tests/conftest.py simulates 8 CPU devices.

# What each dataset config must train on: (dataset, num_classes, model_name).
EXPECTED = {
    "cifar10.py": ("cifar10", 10, "wrn28_2"),
    "cifar100.py": ("cifar100", 100, "wrn28_8"),
    "svhn.py": ("svhn_cropped", 10, "wrn28_2"),
    "stl10.py": ("stl10", 10, "wide_resnet"),
    "mini_imagenet.py": ("mini_imagenet", 100, "resnet18"),
    "mnist.py": ("mnist", 10, "small_cnn"),
    "digits.py": ("digits", 10, "small_cnn"),
    # Your own images: the class count is the data's (0 in the file; a 10-class folder here),
    # and the model the machine's: the small CNN on this CPU (``machine=auto``).
    "image_folder.py": ("image_folder", 10, "small_cnn"),
}
# The configs that follow docs/method.md's training protocol unchanged.
PROTOCOL_CONFIGS = ("cifar10.py", "cifar100.py", "svhn.py", "stl10.py", "mini_imagenet.py")

# Published split sizes: (num_classes, labeled training images, image shape).
DATASET_SIZES = {
    "cifar10": (10, 50_000, (32, 32, 3)),
    "cifar100": (100, 50_000, (32, 32, 3)),
    "svhn_cropped": (10, 73_257, (32, 32, 3)),
    "stl10": (10, 5_000, (96, 96, 3)),
    "mini_imagenet": (100, 50_000, (84, 84, 3)),
    "mnist": (10, 60_000, (28, 28, 1)),
    "digits": (10, 1_497, (8, 8, 1)),
    "image_folder": (10, 1_000, (32, 32, 3)),  # A user's folder, at the config's image_size.
}


@dataclasses.dataclass(frozen=True)
class FakeDatasetInfo:
    """The attributes of `input_pipeline.DatasetInfo` that config validation reads."""

    name: str
    num_classes: int
    num_train: int


def fake_info(dataset: str) -> FakeDatasetInfo:
    num_classes, num_train, _ = DATASET_SIZES[dataset]
    return FakeDatasetInfo(dataset, num_classes, num_train)


def load_config_module(filename: str):
    path = CONFIG_DIR / filename
    spec = importlib.util.spec_from_file_location(f"configs_under_test.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(filename: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The config, with ``num_classes=0`` (the data's count) read from `DATASET_SIZES`.

    The image-folder config gets the ``data.path`` its command line must give.
    """
    config = load_config_module(filename).get_config(arg)
    if filename == "image_folder.py":
        config.data.path = "/data/my_images"
    return with_dataset_facts(config, fake_info(config.data.name))


def test_every_dataset_config_is_listed():
    # tiny.py exercises the code; sdt_mlp.py is a related method's recipe
    # (tests/test_sdt_recipe.py), neither a dataset's MUSCLE config.
    assert set(EXPECTED) | {"tiny.py", "sdt_mlp.py"} == set(CONFIG_FILES)


def test_the_image_folder_config_takes_its_classes_and_sizes_from_the_data():
    module = load_config_module("image_folder.py")
    config = module.get_config("image_size=64")
    assert config.data.num_classes == 0 and config.data.path is None
    assert config.data.num_labeled == 0  # Every image of train/ keeps its label.
    assert config.data.image_size == 64 and config.data.max_image_size is None
    kept = module.get_config("image_size=0").data
    assert kept.image_size is None and kept.max_image_size is None
    mine = module.get_config("model=mypkg.nets:Net")
    assert mine.model.name == "mypkg.nets:Net" and not mine.model.kwargs  # No CNN widths.
    assert module.get_config("num_labeled=30").data.num_labeled == 30


def test_the_image_folder_config_is_sized_for_the_machine():
    module = load_config_module("image_folder.py")
    accelerator = module.get_config("machine=accelerator")
    assert (accelerator.model.name, accelerator.data.image_size) == ("wrn28_2", 32)
    assert (accelerator.data.batch_size, accelerator.data.unlabeled_ratio) == (64, 7)
    assert (accelerator.total_steps, accelerator.ema_decay) == (2**16, 0.999)
    assert accelerator.eval_every_steps == 1024 and accelerator.data.max_image_size is None
    cpu = module.get_config("machine=cpu")
    assert (cpu.model.name, cpu.model.kwargs.widths) == ("small_cnn", module.CPU_WIDTHS)
    assert (cpu.data.image_size, cpu.data.max_image_size) == (None, 32)
    assert (cpu.data.batch_size, cpu.total_steps, cpu.eval_every_steps) == (16, 300, 50)
    # An EMA over a tenth of the run, as short a run as it is: no horizon warning.
    from muscle_jax import evaluation

    for steps in (cpu.total_steps, 60, 5000):
        short = module.get_config(f"machine=cpu,total_steps={steps}")
        assert short.ema_decay == min(0.999, round(1 - 10 / steps, 3))
        assert evaluation.ema_horizon_note(short.ema_decay, steps) is None
    # machine=auto asks JAX: this test session runs on the CPU.
    assert jax.default_backend() == "cpu" and module.get_config().model.name == "small_cnn"


def test_machine_auto_never_starts_jax_before_a_multi_process_runtime(monkeypatch):
    def no_backend():
        raise AssertionError("asked JAX's backend before jax.distributed.initialize")

    monkeypatch.setattr(jax, "default_backend", no_backend)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    assert config_defaults.sized_for("auto") == "accelerator"
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", ["main", "--num_processes=2", "--config=x.py"])
    assert config_defaults.sized_for("auto") == "accelerator"
    assert config_defaults.sized_for("cpu") == "cpu"
    with pytest.raises(ValueError, match="machine='gpu' is not one of"):
        config_defaults.sized_for("gpu")


# ---------------------------------------------------------------- valid configs


@pytest.mark.parametrize("filename", CONFIG_FILES)
def test_default_config_validates_on_8_devices(filename):
    config = get_config(filename)
    validate_config(config, num_devices=NUM_DEVICES)
    validate_config(config, num_devices=1)
    assert config.model.name in models.list_models()


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_default_config_trains_what_it_says(filename):
    config = get_config(filename)
    dataset, num_classes, model_name = EXPECTED[filename]
    assert (config.data.name, config.data.num_classes, config.model.name) == (
        dataset,
        num_classes,
        model_name,
    )
    validate_against_dataset(config, fake_info(dataset))
    assert config.data.num_labeled % config.data.num_classes == 0  # a balanced labeled set.
    assert config.loss.consistency == "fixmatch"
    assert config.loss.unsupervised_weight > 0
    assert config.eval_every_steps <= config.total_steps
    assert config.checkpoint_every_steps <= config.total_steps


@pytest.mark.parametrize("filename", PROTOCOL_CONFIGS)
def test_protocol_configs_keep_the_protocol(filename):
    config = get_config(filename)
    assert config.optimizer.name == "sgd"
    assert config.optimizer.learning_rate == 0.03
    assert config.optimizer.nesterov
    assert config.optimizer.momentum == 0.9
    assert config.optimizer.schedule == "cosine"
    assert config.optimizer.warmup_steps == 0
    assert config.optimizer.weight_decay == (1e-3 if filename == "cifar100.py" else 5e-4)
    assert config.data.batch_size == 64
    assert config.data.unlabeled_ratio == 7
    assert config.total_steps == 2**20
    assert config.ema_decay == 0.999
    assert config.loss.fixmatch.threshold == 0.95
    assert config.median_of_last_evals == 20


def test_configs_set_only_what_differs_from_the_schema():
    # The schema lives in config_defaults: a config adds no key of its own.
    base = _flat_keys(config_defaults.base_config())
    for filename in CONFIG_FILES:
        extra = _flat_keys(get_config(filename)) - base
        assert not {key for key in extra if not key.startswith("model.kwargs.")}, filename


def _flat_keys(config, prefix=""):
    keys = set()
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys |= _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


@pytest.mark.parametrize("filename", CONFIG_FILES)
@pytest.mark.parametrize("method", config_defaults.METHODS)
def test_method_variants_validate(filename, method):
    for mi in (True, False):
        config = get_config(filename, f"method={method},mi={mi}")
        validate_config(config, num_devices=NUM_DEVICES)
        expected_consistency = "none" if method == "supervised" else method
        assert config.loss.consistency == expected_consistency
        assert (config.loss.unsupervised_weight > 0) == (mi and method != "supervised")
        assert (config.data.unlabeled_ratio == 0) == (method == "supervised")


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_other_label_counts_seeds_and_short_runs(filename):
    default = get_config(filename)
    info = fake_info(default.data.name)
    # 0 (every training example labeled, the image folder's default): half the data's.
    labeled = default.data.num_labeled or info.num_train
    fewer = labeled // 2 // default.data.num_classes * default.data.num_classes
    # A ratio of 10 needs ~5 labels a class for its smallest class to get one.
    ratio = 10 if fewer >= 5 * default.data.num_classes else 2
    arg = f"num_labeled={fewer},seed=3,total_steps=200,imbalance_ratio={ratio}"
    config = get_config(filename, arg)
    validate_config(config, num_devices=NUM_DEVICES)
    validate_against_dataset(config, info)
    assert (config.data.num_labeled, config.seed, config.total_steps) == (fewer, 3, 200)
    assert config.data.imbalance_ratio == ratio
    assert config.eval_every_steps <= 200 and config.checkpoint_every_steps <= 200


def test_documented_variants():
    assert get_config("mini_imagenet.py", "num_labeled=10000").data.num_labeled == 10_000
    validate_against_dataset(
        get_config("mini_imagenet.py", "num_labeled=10000"), fake_info("mini_imagenet")
    )
    assert get_config("mnist.py", "model=mlp").model.name == "mlp"
    assert get_config("stl10.py", "num_labeled=1000").data.num_labeled == 1000
    assert get_config("cifar100.py", "num_labeled=400").data.num_labeled == 400
    assert get_config("cifar10.py", "num_labeled=40").data.num_labeled == 40


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_model_builds_with_the_config_kwargs(filename):
    config = get_config(filename)
    if filename == "mnist.py":
        config = get_config(filename, "model=mlp")  # small_cnn is covered by digits.
    _, _, image_shape = DATASET_SIZES[config.data.name]
    kwargs = dict(config.model.kwargs)
    if config.model.name == "mlp":
        kwargs.setdefault("input_shape", image_shape)
    else:
        kwargs.setdefault("in_channels", image_shape[-1])
    # eval_shape: builds the module abstractly, without allocating WRN-28-8's weights.
    model = nnx.eval_shape(
        lambda: models.create_model(
            config.model.name, num_classes=config.data.num_classes, rngs=nnx.Rngs(0), **kwargs
        )
    )
    num_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert num_params > 0


def _centre_feature(x):
    """Stands in for global average pooling: the last feature map's centre position alone."""
    return x[:, x.shape[1] // 2, x.shape[2] // 2, :]


@pytest.mark.parametrize("filename", CONFIG_FILES)
def test_model_sees_the_whole_image_before_pooling(filename, monkeypatch):
    """The receptive field of one position of the last feature map covers the image.

    With less, global average pooling classifies a bag of local patches (a
    3-layer small CNN saw a 9x9 window of a 28x28 MNIST digit). Measured, not
    computed: the gradient of the logits with respect to the image, with
    pooling replaced by the centre position, must reach every pixel.
    """
    config = get_config(filename)
    _, _, image_shape = DATASET_SIZES[config.data.name]
    name, kwargs = config.model.name, dict(config.model.kwargs)
    if name == "mlp":
        pytest.skip("an MLP sees every pixel")
    # The receptive field does not depend on the width: thin copies keep the test quick.
    if name.startswith("wrn28_") or name == "wide_resnet":
        name, kwargs = "wide_resnet", {"depth": 28, **kwargs, "width": 1}
    if name == "resnet18":
        kwargs["base_width"] = 4
    monkeypatch.setattr(models.layers, "global_average_pool", _centre_feature)
    model = models.create_model(
        name,
        num_classes=config.data.num_classes,
        rngs=nnx.Rngs(0),
        in_channels=image_shape[-1],
        **kwargs,
    )
    image = jax.random.normal(jax.random.key(0), (1, *image_shape))
    # Under jit: op-by-op gradients of a 28-layer network take a minute on 2 cores.
    graphdef, state = nnx.split(model)

    def logits_sum(x):
        return nnx.merge(graphdef, state)(x, train=False).logits.sum()

    gradient = jax.jit(jax.grad(logits_sum))(image)
    seen = np.abs(np.asarray(gradient[0])).sum(-1) > 0
    rows, cols = np.nonzero(seen)
    assert seen.all(), (
        f"{filename}: {config.model.name} sees rows {rows.min()}-{rows.max()} and columns "
        f"{cols.min()}-{cols.max()} of a {image_shape[0]}x{image_shape[1]} image"
    )


# ---------------------------------------------------------------- invalid configs


def _error(config, num_devices=NUM_DEVICES) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, num_devices=num_devices)
    return str(info.value)


@pytest.mark.parametrize("steps", [0, -1])
def test_non_positive_total_steps(steps):
    config = get_config("cifar10.py")
    config.total_steps = steps
    assert f"total_steps={steps}" in _error(config)


def test_batch_not_divisible_by_devices():
    config = get_config("cifar10.py")
    config.data.batch_size = 60
    message = _error(config)
    assert "batch_size=60" in message and "8 devices" in message
    validate_config(config, num_devices=4)  # 60 and 420 split over 4 devices.


def test_eval_batch_not_divisible_by_devices():
    config = get_config("digits.py")
    config.data.eval_batch_size = 100
    assert "eval_batch_size=100" in _error(config)


def test_more_labels_than_the_dataset_has():
    config = get_config("cifar10.py", "num_labeled=60000")
    with pytest.raises(ConfigError, match=r"num_labeled=60000 .*50000"):
        validate_against_dataset(config, fake_info("cifar10"))


def test_num_classes_mismatch():
    config = get_config("cifar10.py")
    config.data.num_classes = 100
    validate_config(config, num_devices=NUM_DEVICES)  # fine on its own...
    with pytest.raises(ConfigError, match=r"num_classes=100 .*'cifar10' has 10"):
        validate_against_dataset(config, fake_info("cifar10"))  # ...not for CIFAR-10.


def test_unknown_consistency():
    config = get_config("cifar10.py")
    config.loss.consistency = "fixmatch2"
    assert "loss.consistency='fixmatch2'" in _error(config)


def test_unknown_model_name():
    config = get_config("cifar10.py")
    config.model.name = "wrn28_3"
    message = _error(config)
    assert "model.name='wrn28_3'" in message and "wrn28_2" in message


def test_ema_decay_one():
    config = get_config("cifar10.py")
    config.ema_decay = 1.0
    assert "ema_decay=1.0" in _error(config)


def test_no_unlabeled_batch_with_fixmatch():
    config = get_config("cifar10.py")
    config.data.unlabeled_ratio = 0
    message = _error(config)
    assert "unlabeled_ratio=0" in message and "'fixmatch'" in message


def test_num_labeled_zero_labels_every_training_example():
    config = get_config("cifar10.py", "num_labeled=0")
    validate_config(config, num_devices=NUM_DEVICES)
    validate_against_dataset(config, fake_info("cifar10"))
    config.data.num_labeled = -1
    assert "data.num_labeled=-1 must be an integer >= 0" in _error(config)
    config = get_config("cifar10.py", "num_labeled=0,imbalance_ratio=10")
    assert "imbalance_ratio=10.0 draws a long-tailed subset" in _error(config)
    # Every training image labeled and kept out of the pool leaves no unlabeled image.
    config = get_config("cifar10.py", "num_labeled=0")
    config.data.exclude_labeled_from_unlabeled = True
    with pytest.raises(ConfigError, match="unlabeled pool, which is then empty"):
        validate_against_dataset(config, fake_info("cifar10"))


def test_class_count_checks_wait_for_the_data():
    # loss.sdt.k < num_classes: with num_classes=0 (the data's count) checked once it is known.
    config = load_config_module("image_folder.py").get_config("unsupervised=sdt")
    config.data.path = "/data/my_images"
    validate_config(config, num_devices=NUM_DEVICES)
    config.loss.sdt.k = 3
    validate_config(config, num_devices=NUM_DEVICES)
    resolved = with_dataset_facts(config, FakeDatasetInfo("mine", 3, 300))
    with pytest.raises(ConfigError, match=r"loss\.sdt\.k=3 must be an integer in \[1, data\.nu"):
        validate_against_dataset(resolved, FakeDatasetInfo("mine", 3, 300))
    validate_against_dataset(
        with_dataset_facts(config, fake_info("image_folder")), fake_info("image_folder")
    )
    config.loss.sdt.k = 0  # Wrong whatever the count: refused at once.
    assert "loss.sdt.k=0 must be an integer in [1, data.num_classes=the data's count)" in (
        _error(config)
    )


def test_model_kwargs_are_checked_against_the_models_signature():
    config = get_config("mnist.py")
    config.model.name = "mlp"  # The small CNN's widths stay behind.
    message = _error(config)
    assert (
        "model.kwargs.widths is not an argument of model 'mlp', which takes input_shape, "
        "hidden_sizes, dropout_rate" in message
    )
    assert message.count("\n  - ") == 1  # One line: the offending argument.
    config.model.kwargs = ml_collections.ConfigDict({"hidden_sizes": (64,), "dtype": "x"})
    assert "model.kwargs.dtype is set by muscle_jax" in _error(config)
    config = get_config("cifar10.py")
    config.model.kwargs.width = 8
    assert "model 'wrn28_2' fixes {'depth': 28, 'width': 2}" in _error(config)


def test_naming_another_model_on_the_command_line_drops_the_files_model_kwargs():
    from absl import flags
    from ml_collections import config_flags

    from muscle_jax import command_line

    def parse(*args):
        flag_values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
        command_line.parse(flag_values, ["main", *args])
        return flag_values.config

    mnist = str(CONFIG_DIR / "mnist.py")
    assert dict(parse(f"--config={mnist}").model.kwargs) == {"widths": (32, 64, 128, 128, 128, 128)}
    mlp = parse(f"--config={mnist}", "--config.model.name=mlp")
    assert mlp.model.name == "mlp" and not mlp.model.kwargs
    validate_config(mlp, num_devices=NUM_DEVICES)
    # The command line's own kwargs reach the model it names; the same name keeps the file's.
    mlp = parse(
        f"--config={mnist}", "--config.model.name=mlp", "--config.model.kwargs.hidden_sizes=(64,)"
    )
    assert dict(mlp.model.kwargs) == {"hidden_sizes": (64,)}
    same = parse(f"--config={mnist}", "--config.model.name=small_cnn")
    assert same.model.kwargs.widths == (32, 64, 128, 128, 128, 128)


def test_every_problem_is_reported_at_once():
    config = get_config("cifar10.py")
    config.total_steps = -5
    config.ema_decay = 1.5
    config.model.name = "nope"
    message = _error(config)
    for fragment in ("total_steps=-5", "ema_decay=1.5", "model.name='nope'"):
        assert fragment in message


@pytest.mark.parametrize(
    ("arg", "fragments"),
    [
        ("num_labelled=250", ["num_labelled", "num_labeled"]),
        ("num_labeled=abc", ["num_labeled", "'abc'", "int"]),
        ("mi=maybe", ["mi", "'maybe'", "bool"]),
        ("total_steps=1e3", ["total_steps", "'1e3'"]),
        ("num_labeled", ["num_labeled", "key=value"]),
        ("method=fixmatch2", ["fixmatch2", "mixmatch"]),
    ],
)
@pytest.mark.parametrize("filename", ["cifar10.py", "digits.py"])
def test_bad_variant_arg(filename, arg, fragments):
    with pytest.raises(ValueError) as info:
        get_config(filename, arg)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_bad_mnist_model_arg():
    with pytest.raises(ValueError, match=r"model='resnet18'"):
        get_config("mnist.py", "model=resnet18")


def test_parse_arg_types():
    arg = config_defaults.parse_arg(
        "num_labeled=250, mi=False,imbalance_ratio=2.5,method=mixmatch",
        num_labeled=4000,
        mi=True,
        imbalance_ratio=1.0,
        method="fixmatch",
    )
    assert (arg.num_labeled, arg.mi, arg.imbalance_ratio, arg.method) == (
        250,
        False,
        2.5,
        "mixmatch",
    )


def test_locked_config_rejects_unknown_keys_and_wrong_types():
    config = get_config("cifar10.py")
    config.lock()
    with pytest.raises((AttributeError, KeyError), match="totl_steps"):
        config.totl_steps = 10
    with pytest.raises((AttributeError, KeyError), match="learning_rat"):
        config.optimizer.learning_rat = 0.1
    with pytest.raises(TypeError):
        config.total_steps = "ten"
    config.total_steps = 10  # known keys stay writable.


# ---------------------------------------------------------------- command line


def _run_main(tmp_path, *flags, timeout=120):
    env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    workdir = tmp_path / "workdir"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "muscle_jax.main", *flags, f"--workdir={workdir}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result, time.monotonic() - start, workdir


@pytest.mark.slow
def test_cli_rejects_negative_total_steps_before_compiling(tmp_path):
    result, seconds, workdir = _run_main(
        tmp_path, "--config=configs/tiny.py", "--config.total_steps=-1"
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "total_steps=-1" in output
    assert seconds < 60, f"took {seconds:.0f} s to reject the config"
    assert not (workdir / "checkpoints").exists()


@pytest.mark.slow
def test_cli_rejects_unknown_key(tmp_path):
    result, _, workdir = _run_main(tmp_path, "--config=configs/tiny.py", "--config.no_such_key=1")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "no_such_key" in output
    assert not (workdir / "checkpoints").exists()


@pytest.mark.slow
def test_cli_rejects_bad_variant_arg(tmp_path):
    result, _, workdir = _run_main(tmp_path, "--config=configs/digits.py:num_labelled=50")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "num_labelled" in output
    assert not (workdir / "checkpoints").exists()


@pytest.mark.slow
def test_command_line_mistakes_are_one_line_each_with_the_fix(tmp_path):
    digits = str(CONFIG_DIR / "digits.py")
    workdir = f"--workdir={tmp_path / 'run'}"
    missing, variant, key = cli_driver.run_command_lines(
        "muscle_jax.main",
        [
            ["--config=configs/digits.py", workdir],  # Relative, from outside the repo.
            [f"--config={digits}:foo=1", workdir],
            [f"--config={digits}", "--config.total_step=3", workdir],
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    for result in (missing, variant, key):
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr and result.stderr.count("error:") == 1
    assert f"Did you mean --config={digits}?" in missing.stderr
    assert "Unknown config arg 'foo'; known: [" in variant.stderr
    assert "\\n" not in key.stderr and "\\'" not in key.stderr
    assert "unknown config key 'total_step' Did you mean \"total_steps\"" in key.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_experiments_help_lists_every_suite_and_the_overrides():
    (result,) = cli_driver.run_command_lines("muscle_jax.experiments.__main__", [["--help"]])
    assert result.returncode == 0, result
    for suite in ("label_sweep", "bias", "finetune", "mi_ablation", "objectives", "bases", "noise"):
        assert f"  {suite} " in result.stdout
    assert "--noise_levels" in result.stdout and "--noise_kind" in result.stdout
    assert "--config.KEY=VALUE" in result.stdout


@pytest.mark.slow
def test_mnist_with_the_mlp_by_name_trains_or_is_refused_in_one_line(tmp_path):
    # The MNIST config on digits (embedded, nothing to prepare): the model switched by name.
    short = ["--config.data.name=digits", "--config.total_steps=2", "--config.eval_every_steps=2",
             "--config.checkpoint_every_steps=2", "--config.data.batch_size=8",
             "--config.data.unlabeled_ratio=1", "--config.data.eval_batch_size=64"]  # fmt: skip
    trained, refused = cli_driver.run_command_lines(
        "muscle_jax.main",
        [
            [
                "--config=configs/mnist.py",
                "--config.model.name=mlp",
                *short,
                f"--workdir={tmp_path / 'mlp'}",
            ],
            [
                "--config=configs/mnist.py",
                "--config.model.name=mlp",
                "--config.model.kwargs.widths=(8,)",
                *short,
                f"--workdir={tmp_path / 'bad'}",
            ],
        ],
        env={**os.environ, "XLA_FLAGS": xla_flags()},  # One device, as a user's machine.
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = json.loads((tmp_path / "mlp" / "results.json").read_text())
    model = results["config"]["model"]
    assert (model["name"], model["kwargs"]) == ("mlp", {})  # No small-CNN widths.
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("model.kwargs.widths is not an argument of model 'mlp'") == 1
    assert not (tmp_path / "bad").exists()
