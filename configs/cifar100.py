"""MUSCLE (FixMatch + MI) on CIFAR-100 with WRN-28-8, under the FixMatch training protocol.

Command:
  python -m muscle_jax.main --config=configs/cifar100.py --workdir=gs://BUCKET/muscle/cifar100_10000
Variants (``key=value`` after the colon; fields with ``--config.KEY=VALUE``):
  --config=configs/cifar100.py:num_labeled=2500
  --config=configs/cifar100.py:num_labeled=400,method=fixmatch,mi=False   (base method alone)
  --config=configs/cifar100.py:method=mixmatch,seed=2
  --config=configs/cifar100.py:total_steps=20000 --config.model.compute_dtype=bfloat16
Methods (``method=``): fixmatch (default), mixmatch, mean_teacher, mse, the
modern bases flexmatch, freematch, softmatch, adamatch, uda and dash, debiased
(debiased pseudo-labelling), none (supervised + MI), supervised (labeled data
only); ``mi=False`` drops the MUSCLE term.
Other terms: ``unsupervised=sdt|mio`` in place of MUSCLE's IIC,
``supervised=self_adaptive`` in place of cross-entropy, and ``addon=abc``
(ABC's balanced head) on top of the base (docs/method.md).

Data: TFDS ``cifar100``. Downloads are off by default: on a machine with
internet run ``tfds build cifar100 --data_dir=DIR``, copy DIR to the training
machine and pass ``--config.data.data_dir=DIR`` (see docs/datasets.md).

Expected accuracy: no MUSCLE figure has been measured with this code. The
anchors are the base method's: FixMatch (RandAugment) reaches 51.15 / 71.71 /
77.40 % with 400 / 2500 / 10000 labels (FixMatch paper, as listed in
docs/method.md). MUSCLE claims to improve on its base method on CIFAR-100; the MI
weight and ramp-up here are this library's defaults, not the MUSCLE paper's.
With method=mixmatch the consistency weight stays at MixMatch's CIFAR-10 value
(75); MixMatch used 150 for CIFAR-100: ``--config.loss.consistency_weight=150``.

Expected run time (an estimate, not a measurement): WRN-28-8 costs ~6.7
GFLOP per 32x32 image forward, ~20 GFLOP forward + backward; a step sees
64 * (1 + 2 * 7) = 960 images, ~19 TFLOP, so the 2**20 protocol steps are
~2e19 FLOP: about 4.7 days at a sustained 50 TFLOP/s, about a day at a
sustained 250 TFLOP/s (several accelerators in bfloat16, e.g. a TPU pod slice
with launch/tpu_pod.sh). Watch img/s in the log for the real rate.

Model fit: WRN-28-8's 25 3x3 convs (strides 1, 2, 2 by group) give one position of
the last 8x8 map a view of the whole 32x32 image before pooling (checked by
tests/test_configs.py).
"""

from muscle_jax import config_defaults


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg, dataset="cifar100", num_classes=100, model_name="wrn28_8", num_labeled=10000
    )
    config.optimizer.weight_decay = 1e-3  # protocol for WRN-28-8.
    config_defaults.apply_variants(config, variants)
    return config
