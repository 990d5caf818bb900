"""The functions this package hands to tf.data run as written, without autograph.

tf.data converts every map, flat_map and filter function with autograph by
default, and follows every call inside it (Keras's layers included),
rewriting and recompiling their source. That conversion was ~3 CPU-s of
every training process's start-up on 2 cores and wrote a few hundred files
to the temporary directory. The pipeline's functions need none of it: their
Python `if`s and loops are over Python values, and their tensor control flow
is written with `tf.cond`.

`skip_graph_optimizer` is the process-wide half of the same choice: see there.
"""

from collections.abc import Callable

import tensorflow as tf


def plain(function: Callable) -> Callable:
    """``function`` marked so that tf.data traces it as it is."""
    return tf.autograph.experimental.do_not_convert(function)


def skip_graph_optimizer() -> None:
    """Turns TensorFlow's graph optimizer (Grappler) off for this process's functions.

    tf.data runs Grappler over every map function when it makes an iterator.
    For the strong view's RandAugment graph that was ~0.6 CPU-s of every
    training iterator (0.9 s against 0.3 s on 2 cores), and the pipeline then
    ran no slower without it (benchmarks/input_pipeline_benchmark.py: 11,000-
    12,700 views a core-second either way, within this machine's noise). The
    pipeline is TensorFlow's only work in a training process, so the setting
    is process-wide: `muscle_jax.main` applies it, and a program of your own
    that calls `train.train_and_evaluate` may too.
    """
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
