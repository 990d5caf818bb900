"""Checks a config before anything is built, compiled or written.

All problems are collected and reported together, each with the key, the
value and what would be valid, so one failed launch fixes every mistake.
"""

import json
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections

from muscle_jax import losses, methods
from muscle_jax.data import device, label_noise, splits

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
# Config name -> compute dtype; the trainer reads the dtype from here too.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class ConfigError(ValueError):
    """A config value that cannot work; the message lists every problem."""


def _value(config, key: str):
    """The value of a dotted ``key`` (``data.batch_size``) of ``config``."""
    for part in key.split("."):
        config = config[part]
    return config


def _integers(keys: tuple[str, ...], minimum: int, requirement: str) -> Callable:
    """A check: each of ``keys`` is an integer (not a bool) of at least ``minimum``."""

    def check(config) -> list[str]:
        values = {key: _value(config, key) for key in keys}
        return [
            f"{key}={value!r} must be {requirement}."
            for key, value in values.items()
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum
        ]

    return check


def _ranged(keys: tuple[str, ...], bad: Callable[[Any], bool], requirement: str) -> Callable:
    """A check: ``KEY=VALUE must be <requirement>`` for each of ``keys`` whose value is ``bad``."""

    def check(config) -> list[str]:
        values = {key: _value(config, key) for key in keys}
        return [
            f"{key}={value} must be {requirement}." for key, value in values.items() if bad(value)
        ]

    return check


def _image_size_problems(config) -> list[str]:
    problems = []
    for key in ("image_size", "max_image_size"):
        value = config.data[key]
        if value is not None and value < 1:
            problems.append(f"data.{key}={value} must be a positive integer.")
        elif value is not None and not config.data.path:
            problems.append(
                f"data.path is not set, but data.{key}={value} is, which resizes data.path's "
                "images: give your images with --config.data.path=DIR (an image folder) or "
                f"FILE.npz, or unset {key} for a named dataset (configs/image_folder.py: "
                "image_size=0)."
            )
    return problems


def _outside_unit_interval(value) -> bool:
    return not 0.0 <= value < 1.0


# The checks of `_check_types_and_ranges`, in the order its problems are listed.
_TYPES_AND_RANGES = (
    _integers(
        (
            "total_steps",
            "data.batch_size",
            "data.eval_batch_size",
            "log_every_steps",
            "eval_every_steps",
            "checkpoint_every_steps",
            "keep_checkpoints",
            "median_of_last_evals",
            "model.overclustering_factor",
        ),
        1,
        "a positive integer",
    ),
    _integers(
        (
            "data.num_labeled",  # 0: every training example labeled.
            "data.unlabeled_ratio",
            "data.num_shards",
            "data.num_validation",
            "model.overclustering_heads",
            "optimizer.warmup_steps",
            "loss.consistency_rampup_steps",
            "loss.unsupervised_rampup_steps",
            "profile_steps",  # 0: no profile.
            "profile_first_step",
        ),
        0,
        "an integer >= 0",
    ),
    _ranged(
        ("data.num_classes",),
        lambda value: value < 2 and value != 0,
        "at least 2 (or 0: the dataset's own count)",
    ),
    _image_size_problems,
    _ranged(("ema_decay",), _outside_unit_interval, "in [0, 1)"),
    _ranged(("memory_limit_gb",), lambda value: not value >= 0, ">= 0 (0: detect the memory)"),
    _ranged(
        ("data.unlabeled_imbalance_ratio",),
        lambda value: not (value == 1.0 or value > 1.0 or value < -1.0),
        "1 (the pool as it is), > 1 (class 0 largest, as the labels) or < -1 (the reversed order)",
    ),
    _ranged(("data.imbalance_ratio",), lambda value: value < 1.0, ">= 1 (1: balanced)"),
    lambda config: label_noise.config_problems(config.data),
    _ranged(("optimizer.learning_rate",), lambda value: value <= 0, "> 0"),
    _ranged(("optimizer.weight_decay",), lambda value: value < 0, ">= 0"),
    _ranged(("optimizer.momentum",), _outside_unit_interval, "in [0, 1)"),
    _ranged(
        (
            "loss.supervised_weight",
            "loss.consistency_weight",
            "loss.unsupervised_weight",
            "loss.addon_weight",
        ),
        lambda value: value < 0,
        ">= 0",
    ),
)


def _check_types_and_ranges(config) -> list[str]:
    return [problem for check in _TYPES_AND_RANGES for problem in check(config)]


def _check_choices(config) -> list[str]:
    from muscle_jax import models  # Deferred: pulls in Flax.

    choices = {
        "loss.consistency_rampup": (config.loss.consistency_rampup, losses.RAMPUP_KINDS),
        "loss.unsupervised_rampup": (config.loss.unsupervised_rampup, losses.RAMPUP_KINDS),
        "optimizer.name": (config.optimizer.name, OPTIMIZERS),
        "optimizer.schedule": (config.optimizer.schedule, SCHEDULES),
        "model.compute_dtype": (config.model.compute_dtype, tuple(COMPUTE_DTYPES)),
        "data.augment_on": (config.data.get("augment_on", "host"), device.AUGMENT_ON),
    }
    if not models.is_import_path(config.model.name):
        choices["model.name"] = (config.model.name, models.list_models())
    problems = [
        f"{key}={value!r} is not one of {allowed}"
        + (" (or module:Class, a backbone of yours)." if key == "model.name" else ".")
        for key, (value, allowed) in choices.items()
        if value not in allowed
    ]
    if models.is_import_path(config.model.name):
        try:
            models.user.load_class(config.model.name)
        except models.UserModelError as error:
            problems.append(str(error))
    if not any(problem.startswith("model.name=") for problem in problems):
        # The model is known: its arguments, against its signature.
        problems += models.kwargs_problems(config.model.name, dict(config.model.kwargs))
    # The loss terms and their sections: each method checks its own.
    return problems + methods.check(config)


def _check_divisibility(config, num_devices: int, num_processes: int) -> list[str]:
    problems = []
    batches = {
        "data.batch_size": config.data.batch_size,
        "data.batch_size * data.unlabeled_ratio": (
            config.data.batch_size * config.data.unlabeled_ratio
        ),
        "data.eval_batch_size": config.data.eval_batch_size,
    }
    for name, size in batches.items():
        if isinstance(size, int) and size % max(num_devices, num_processes):
            problems.append(
                f"{name}={size} is not divisible by the {num_devices} devices over "
                f"{num_processes} process(es); choose a multiple of {num_devices}."
            )
    shards = config.data.num_shards
    if shards and shards % num_processes:
        problems.append(
            f"data.num_shards={shards} is not a multiple of the {num_processes} processes; each "
            "process reads an equal share of the data shards."
        )
    for name in ("data.batch_size", "data.batch_size * data.unlabeled_ratio"):
        if shards and batches[name] % shards:
            problems.append(
                f"{name}={batches[name]} does not split into data.num_shards={shards} shards."
            )
    if config.data.num_classes:  # (0: the dataset's count, checked once it is open.)
        problems += _labeled_split_problems(config, config.data.num_classes)
    return problems


def _labeled_split_problems(config, num_classes: int) -> list[str]:
    """Whether ``data.num_labeled`` splits over the classes (per class, or long-tailed)."""
    if config.data.num_labeled == splits.ALL_LABELED:
        if config.data.imbalance_ratio != 1.0:
            return [
                f"data.imbalance_ratio={config.data.imbalance_ratio} draws a long-tailed subset "
                "of data.num_labeled examples, but data.num_labeled=0 labels every training "
                "example as the data has them; give a num_labeled or set imbalance_ratio=1."
            ]
        return []
    try:
        splits.per_class_counts(
            config.data.num_labeled, num_classes, imbalance_ratio=config.data.imbalance_ratio
        )
    except ValueError as error:
        return [f"data.num_labeled={config.data.num_labeled}: {error}"]
    return []


def with_data_shards(config: ml_collections.ConfigDict, num_processes: int):
    """``config`` with ``data.num_shards=0`` (automatic) resolved to one shard a process.

    Resolved when a run starts and fixed from then on: the value is saved with
    the checkpoints, so a resume on another process count reads the same data.
    """
    if config.data.num_shards != 0:
        return config
    config = config.copy_and_resolve_references()
    config.data.num_shards = num_processes
    return config


def with_augment_place(config: ml_collections.ConfigDict, platform: str):
    """``config`` with ``data.augment_on="auto"`` resolved for ``platform`` (a JAX backend name).

    Resolved when a run starts and saved with it, like ``data.num_shards``: a
    resumed run augments where it started.
    """
    if config.data.get("augment_on") != "auto":
        return config
    config = config.copy_and_resolve_references()
    config.data.augment_on = device.augment_place(config.data, platform)
    return config


def validate_config(
    config: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1
) -> None:
    """Raises `ConfigError` listing every invalid value in ``config``."""
    problems = _check_types_and_ranges(config)
    problems += _check_choices(config)
    if not problems:
        problems += _check_divisibility(config, num_devices, num_processes)
    if config.init_from is not None and not config.init_from:
        problems.append("init_from='' is empty; leave it unset or name a checkpoint directory.")
    if problems:
        raise ConfigError("Invalid config:\n  - " + "\n  - ".join(problems))


def with_dataset_facts(config: ml_collections.ConfigDict, info):
    """``config`` with ``data.num_classes=0`` (the dataset's count) resolved from ``info``."""
    if config.data.num_classes != 0:
        return config
    config = config.copy_and_resolve_references()
    config.data.num_classes = info.num_classes
    return config


def validate_against_dataset(config: ml_collections.ConfigDict, info) -> None:
    """Checks the config against the dataset's real sizes (an `input_pipeline.DatasetInfo`)."""
    problems = []
    if config.data.num_classes != info.num_classes:
        problems.append(
            f"data.num_classes={config.data.num_classes} but dataset {info.name!r} has "
            f"{info.num_classes} classes; set --config.data.num_classes={info.num_classes}."
        )
    problems += _labeled_split_problems(config, info.num_classes)
    if config.data.num_labeled > info.num_train:
        problems.append(
            f"data.num_labeled={config.data.num_labeled} is more than the {info.num_train} "
            f"training examples of {info.name!r}."
        )
    if (
        config.data.num_labeled == splits.ALL_LABELED
        and config.data.exclude_labeled_from_unlabeled
        and config.data.unlabeled_ratio
        and not getattr(info, "num_unlabeled_only", 0)
    ):
        problems.append(
            f"data.num_labeled=0 labels every training example of {info.name!r} and "
            "data.exclude_labeled_from_unlabeled=True keeps them out of the unlabeled pool, "
            "which is then empty: add unlabeled images (an image folder's unlabeled/), give a "
            "num_labeled, or set exclude_labeled_from_unlabeled=False."
        )
    # The terms' checks again, now with the class count (data.num_classes=0 is the
    # data's count, unknown to `validate_config`): e.g. loss.sdt.k < num_classes.
    if not problems:
        problems += methods.check(config)
    if problems:
        raise ConfigError("Config does not fit the dataset:\n  - " + "\n  - ".join(problems))


# Keys a resumed run may change: they decide when and how results are
# reported and where data is read, not what is trained. Every other key is
# fixed for the life of a workdir (see `resume_changes`).
RESUME_CHANGEABLE_KEYS = frozenset(
    {
        "eval_every_steps",
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "median_of_last_evals",
        "plot_curves",
        "data.eval_batch_size",
        "data.data_dir",
        "data.download",
        "init_from",
        "init_from_step",
        "allow_config_change_on_resume",
        "memory_limit_gb",
        "profile_steps",
        "profile_first_step",
    }
)
# Top-level keys added since checkpoints carry their config, with the value that
# does what a run before them did: a checkpoint without one is read as having it.
KEYS_ADDED = {"memory_limit_gb": 0.0, "profile_steps": 0, "profile_first_step": 10}


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_changes(saved: dict, current: dict) -> tuple[list[str], list[str]]:
    """``(fixed, changeable)``: ``"key: saved -> current"`` for every key that differs.

    ``saved`` is the config a workdir's checkpoint was written with, ``current``
    the one resuming it (both as plain dicts). A method key added since
    (`methods.keys_added_later`), a label-noise key (`label_noise.KEYS_ADDED`) or
    another key of `KEYS_ADDED` that ``saved`` lacks counts as the value that does
    what the saved run did.
    """
    before, after = _flat(saved), _flat(current)
    added = {**methods.keys_added_later(), **label_noise.KEYS_ADDED, **KEYS_ADDED}
    for key, value in added.items():
        before.setdefault(key, value)
    fixed, changeable = [], []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            line = f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
            (changeable if key in RESUME_CHANGEABLE_KEYS else fixed).append(line)
    return fixed, changeable


# Keys whose absence from a saved config means the run trained on something this
# version no longer has: the refusal says what, since "None -> 3" alone does not.
ABSENT_BEFORE = {
    "data.rand_augment_ops": "the checkpoint predates version 0.2.0: its run's strong views "
    "came from the old Keras approximation of RandAugment, replaced by the reference "
    "RandAugment, so resuming would switch augmentations mid-run",
}


def _why_absent(saved: dict) -> list[str]:
    flat = _flat(saved)
    return [why for key, why in ABSENT_BEFORE.items() if key not in flat]


def check_resume(saved: dict | None, config: ml_collections.ConfigDict, *, where: str) -> list[str]:
    """Refuses a resume that changes fixed keys; returns the allowed changes to log.

    Raises `ConfigError` listing the changed fixed keys unless
    ``config.allow_config_change_on_resume`` is set.
    """
    if saved is None:  # Written before checkpoints carried their config.
        return []
    fixed, changeable = resume_changes(saved, json.loads(config.to_json()))
    if fixed and not config.allow_config_change_on_resume:
        raise ConfigError(
            f"The checkpoint in {where} was written with other values of keys that cannot "
            f"change mid-run: {'; '.join(fixed)}. Rerun with the original values, use a new "
            "--workdir, or pass --config.allow_config_change_on_resume=True to continue "
            "anyway (e.g. to extend a finished run's total_steps)."
            + "".join(f" Note: {why}." for why in _why_absent(saved))
        )
    return fixed + changeable
