"""MUSCLE (FixMatch + MI) on CIFAR-10 with WRN-28-2, under the FixMatch training protocol.

Command:
  python -m muscle_jax.main --config=configs/cifar10.py --workdir=gs://BUCKET/muscle/cifar10_4000
Variants (``key=value`` after the colon; fields with ``--config.KEY=VALUE``):
  --config=configs/cifar10.py:num_labeled=250,seed=1
  --config=configs/cifar10.py:method=mixmatch,mi=False     (the base method alone)
  --config=configs/cifar10.py:num_labeled=4000,imbalance_ratio=10   (long-tailed labels)
  --config=configs/cifar10.py:total_steps=20000            (a short run; schedule follows)
Methods (``method=``): fixmatch (default), mixmatch, mean_teacher, mse, the
modern bases flexmatch, freematch, softmatch, adamatch, uda and dash, debiased
(debiased pseudo-labelling), none (supervised + MI), supervised (labeled data
only); ``mi=False`` drops the MUSCLE term.
Other terms: ``unsupervised=sdt|mio`` in place of MUSCLE's IIC,
``supervised=self_adaptive`` in place of cross-entropy, and ``addon=abc``
(ABC's balanced head) on top of the base (docs/method.md).

Data: TFDS ``cifar10``. Downloads are off by default: on a machine with
internet run ``tfds build cifar10 --data_dir=DIR``, copy DIR to the training
machine and pass ``--config.data.data_dir=DIR`` (see docs/datasets.md).

Expected accuracy: no MUSCLE figure has been measured with this code. The
anchors are the base method's: FixMatch (RandAugment) reaches 86.19 / 94.93 /
95.74 % with 40 / 250 / 4000 labels, MixMatch 88.92 / 93.76 % with 250 / 4000
(FixMatch and MixMatch papers, as listed in docs/method.md). MUSCLE claims to
improve on its base method, most with few labels; the MI weight and ramp-up
here are this library's defaults, not values taken from the MUSCLE paper.

Expected run time (an estimate, not a measurement): WRN-28-2 costs ~0.43
GFLOP per 32x32 image forward, ~1.3 GFLOP forward + backward; a step sees
64 * (1 + 2 * 7) = 960 images, ~1.2 TFLOP, so the 2**20 protocol steps are
~1.3e18 FLOP: about 7 hours at a sustained 50 TFLOP/s (a TPU v4-8 or an
A100-class GPU in bfloat16, ``--config.model.compute_dtype=bfloat16``), days on
one older GPU. Narrow convolutions rarely sustain more than a fraction of
peak, and RandAugment on the host can be the limit: watch img/s in the log.

Model fit: WRN-28-2's 25 3x3 convs (strides 1, 2, 2 by group) give one position of
the last 8x8 map a view of the whole 32x32 image before pooling (checked by
tests/test_configs.py).
"""

from muscle_jax import config_defaults


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg, dataset="cifar10", num_classes=10, model_name="wrn28_2", num_labeled=4000
    )
    config_defaults.apply_variants(config, variants)
    return config
