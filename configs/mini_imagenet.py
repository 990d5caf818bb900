"""MUSCLE (FixMatch + MI) on Mini-ImageNet (84x84, 100 classes) with ResNet-18.

Command:
  python -m muscle_jax.main --config=configs/mini_imagenet.py --workdir=gs://BUCKET/muscle/mini_4000
Variants (``key=value`` after the colon; fields with ``--config.KEY=VALUE``):
  --config=configs/mini_imagenet.py:num_labeled=10000          (100 labels per class)
  --config=configs/mini_imagenet.py:method=mean_teacher,mi=False   (the base method alone)
  --config=configs/mini_imagenet.py:num_labeled=4000,imbalance_ratio=10   (long-tailed)
  --config=configs/mini_imagenet.py --config.model.kwargs.stem=imagenet   (~12x cheaper)
Methods (``method=``): fixmatch (default), mixmatch, mean_teacher, mse, the
modern bases flexmatch, freematch, softmatch, adamatch, uda and dash, debiased
(debiased pseudo-labelling), none (supervised + MI), supervised (labeled data
only); ``mi=False`` drops the MUSCLE term.
Other terms: ``unsupervised=sdt|mio`` in place of MUSCLE's IIC,
``supervised=self_adaptive`` in place of cross-entropy, and ``addon=abc``
(ABC's balanced head) on top of the base (docs/method.md).

Data: TFDS ``mini_imagenet``, built by this package's builder from manually
placed images (100 classes x 600 images; per class 500 train / 100 test, the
SSL split, not the few-shot 64/16/20 class split):
  tfds build mini_imagenet --imports=muscle_jax.data.mini_imagenet \
      --manual_dir=/path/to/mini_imagenet_images --data_dir=DIR
then pass ``--config.data.data_dir=DIR`` (see docs/datasets.md).

Labels: 4,000 by default (40 per class); 10,000 (100 per class) as a variant.

Backbone: ResNet-18 with the CIFAR-style stem (3x3 stride-1 conv, no max
pool; see muscle_jax/models/resnet.py for why), set as ``stem="cifar"`` so it
can be overridden. Weight decay stays at the protocol's 5e-4.

Expected accuracy: no MUSCLE figure has been measured with this code, and
docs/method.md lists no Mini-ImageNet anchor. The MUSCLE abstract claims a
gain over the base methods here; the MI weight and ramp-up are this
library's defaults, not values taken from the MUSCLE paper.

Expected run time (an estimate, not a measurement): this ResNet-18 costs
~7.4 GFLOP per 84x84 image forward (XLA's cost analysis), ~22 GFLOP forward +
backward; 960 images per step make ~21 TFLOP per step and ~2.2e19 FLOP for
the 2**20 protocol steps: about 5 days at a sustained 50 TFLOP/s, about a
day at 250 TFLOP/s. Decoding and RandAugment of 960 84x84 images per step
needs many host cores; watch img/s in the log.

Model fit: ResNet-18's receptive field lets the centre of its last 11x11 map see
the whole 84x84 image before pooling, with either stem (checked by
tests/test_configs.py for the default CIFAR stem).
"""

from muscle_jax import config_defaults


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg, dataset="mini_imagenet", num_classes=100, model_name="resnet18", num_labeled=4000
    )
    config.model.kwargs.stem = "cifar"
    config_defaults.apply_variants(config, variants)
    return config
