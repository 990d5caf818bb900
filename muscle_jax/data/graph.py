"""The functions this package hands to tf.data run as written, without autograph.

tf.data converts every map, flat_map and filter function with autograph by
default, and follows every call inside it (Keras's layers included),
rewriting and recompiling their source. That conversion was ~3 CPU-s of
every training process's start-up on 2 cores and wrote a few hundred files
to the temporary directory. The pipeline's functions need none of it: their
Python `if`s and loops are over Python values, and their tensor control flow
is written with `tf.cond`.
"""

from collections.abc import Callable

import tensorflow as tf


def plain(function: Callable) -> Callable:
    """``function`` marked so that tf.data traces it as it is."""
    return tf.autograph.experimental.do_not_convert(function)
