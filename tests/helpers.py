"""Shared test helpers."""

import importlib.util
import os

import numpy as np

# `make_train_iterator`'s arguments for a small digits stream (the data tests' default).
DIGITS_STREAM = {
    "data_dir": None,
    "num_labeled": 50,
    "seed": 3,
    "labeled_batch_size": 8,
    "unlabeled_ratio": 2,
    "unlabeled_views": "weak_strong",
}

# XLA's CPU ops on one thread each (conftest.py sets it for the session and every
# process it starts). Two pytest workers already fill the 2 cores: each op
# splitting itself over a thread pool only added hand-offs (measured: a warm
# tiny run took 3.3 CPU-s against 4.2 with the threaded ops and TensorFlow's
# default pools).
ONE_THREAD_XLA_FLAG = "--xla_cpu_multi_thread_eigen=false"
# TensorFlow's op pools on one thread too, for the same reason (conftest.py sets them).
ONE_THREAD_TENSORFLOW = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}


def xla_flags(devices: int | None = None) -> str:
    """XLA_FLAGS for a test process: one-thread ops, and ``devices`` simulated CPU devices."""
    count = [] if devices is None else [f"--xla_force_host_platform_device_count={devices}"]
    return " ".join([ONE_THREAD_XLA_FLAG, *count])


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(name: str, arg: str | None = None):
    """``configs/<name>.py``'s ``get_config(arg)``, loaded by path as config_flags does."""
    path = os.path.join(CONFIG_DIR, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    # No curves.png (~0.5 s of CPU a run, ~100 runs): the shared tiny run draws it
    # and test_workdir_safety checks it; the command-line runs draw theirs.
    config.plot_curves = False
    return config


def mock_tfds(num_examples: int):
    """`tfds.testing.mock_data` whose labels cycle through every class.

    The default mock draws labels at random, so a small mock misses classes and
    a balanced labeled subset cannot be chosen; images stay random uint8.
    """
    import tensorflow as tf  # Deferred: most users of this module need no TensorFlow.
    import tensorflow_datasets as tfds

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del split, decoders, read_config, kwargs
        features = self.info.features
        shape = features["image"].shape
        images = np.random.default_rng(0).integers(0, 256, (num_examples, *shape), np.uint8)
        labels = np.arange(num_examples) % features["label"].num_classes
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    return tfds.testing.mock_data(num_examples=num_examples, as_dataset_fn=as_dataset)


def latest_state(workdir, config=None):
    """The train state of ``workdir``'s latest checkpoint; ``config`` (default: tiny) its shapes."""
    from muscle_jax import checkpointing, input_pipeline, train

    config = config or load_config("tiny")
    reader = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), max_to_keep=2, read_only=True
    )
    _, template, _ = train.create_train_state(config, input_pipeline.dataset_info(config.data.name))
    state, _ = reader.restore(template, expected=train.compatibility(config))
    return state
