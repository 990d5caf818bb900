"""MUSCLE (FixMatch + MI) on SVHN (``svhn_cropped``) with WRN-28-2, under the FixMatch protocol.

Command:
  python -m muscle_jax.main --config=configs/svhn.py --workdir=gs://BUCKET/muscle/svhn_1000
Variants (``key=value`` after the colon; fields with ``--config.KEY=VALUE``):
  --config=configs/svhn.py:num_labeled=250,seed=1
  --config=configs/svhn.py:method=mean_teacher,mi=False     (the base method alone)
  --config=configs/svhn.py:total_steps=20000
Methods (``method=``): fixmatch (default), mixmatch, mean_teacher, mse, the
modern bases flexmatch, freematch, softmatch, adamatch, uda and dash, debiased
(debiased pseudo-labelling), none (supervised + MI), supervised (labeled data
only); ``mi=False`` drops the MUSCLE term.
Other terms: ``unsupervised=sdt|mio`` in place of MUSCLE's IIC,
``supervised=self_adaptive`` in place of cross-entropy, and ``addon=abc``
(ABC's balanced head) on top of the base (docs/method.md).

Data: TFDS ``svhn_cropped`` (73,257 train / 26,032 test digits; the ``extra``
split is not used). Downloads are off by default: on a machine with internet
run ``tfds build svhn_cropped --data_dir=DIR``, copy DIR to the training
machine and pass ``--config.data.data_dir=DIR`` (see docs/datasets.md). Weak
augmentation does not flip SVHN (a mirrored digit is another digit); the
input pipeline's dataset catalog handles that, not this config.

Default labels: 1000 (100 per class), the largest of FixMatch's SVHN settings
(40 / 250 / 1000).

Expected accuracy: no MUSCLE figure has been measured with this code, and
docs/method.md lists no SVHN anchor; compare with the FixMatch paper's SVHN
table for the base method. The MI weight and ramp-up here are this
library's defaults, not values taken from the MUSCLE paper.

Expected run time (an estimate, not a measurement): as configs/cifar10.py,
WRN-28-2 on 32x32 images: ~1.2 TFLOP per step of 960 images, ~1.3e18 FLOP for
the 2**20 protocol steps, about 7 hours at a sustained 50 TFLOP/s.

Model fit: WRN-28-2's 25 3x3 convs (strides 1, 2, 2 by group) give one position of
the last 8x8 map a view of the whole 32x32 image before pooling (checked by
tests/test_configs.py).
"""

from muscle_jax import config_defaults


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg, dataset="svhn_cropped", num_classes=10, model_name="wrn28_2", num_labeled=1000
    )
    config_defaults.apply_variants(config, variants)
    return config
