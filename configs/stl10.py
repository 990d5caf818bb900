"""MUSCLE (FixMatch + MI) on STL-10 (96x96) with WRN-28-2, under the FixMatch protocol.

Command:
  python -m muscle_jax.main --config=configs/stl10.py --workdir=gs://BUCKET/muscle/stl10
Variants (``key=value`` after the colon; fields with ``--config.KEY=VALUE``):
  --config=configs/stl10.py:num_labeled=1000,seed=1
  --config=configs/stl10.py:method=fixmatch,mi=False        (the base method alone)
  --config=configs/stl10.py:total_steps=20000 --config.model.compute_dtype=bfloat16
Methods (``method=``): fixmatch (default), mixmatch, mean_teacher, mse, the
modern bases flexmatch, freematch, softmatch, adamatch, uda and dash, debiased
(debiased pseudo-labelling), none (supervised + MI), supervised (labeled data
only); ``mi=False`` drops the MUSCLE term.
Other terms: ``unsupervised=sdt|mio`` in place of MUSCLE's IIC,
``supervised=self_adaptive`` in place of cross-entropy, and ``addon=abc``
(ABC's balanced head) on top of the base (docs/method.md).

Data: TFDS ``stl10``: 5,000 labeled ``train`` images, 8,000 ``test`` and
100,000 ``unlabeled`` ones, which join the unlabeled stream after the
training images. Downloads are off by default: on a machine with internet
run ``tfds build stl10 --data_dir=DIR`` (about 2.6 GB), copy DIR to the
training machine and pass ``--config.data.data_dir=DIR`` (see docs/datasets.md).

Labels: by default all 5,000 labeled training images (500 per class).
``num_labeled=1000`` draws a seeded, class-balanced 1,000 from them; that is
not one of STL-10's ten predefined 1,000-image folds that FixMatch reports on,
so figures are not directly comparable with FixMatch's STL-10 table.

Backbone: FixMatch used WRN-37-2 for STL-10. This library's ``wide_resnet``
takes depths of the form 6n + 4, so 37 is not available; this config uses
WRN-28-2 (1.47 M parameters, as for CIFAR-10) at full 96x96 resolution, a
smaller model than FixMatch's. It is set as ``wide_resnet`` with explicit
``depth`` and ``width`` so that both can be overridden, e.g.
``--config.model.kwargs.depth=40`` for WRN-40-2 (about 2.2 M parameters).

Expected accuracy: no MUSCLE figure has been measured with this code, and
docs/method.md lists no STL-10 anchor.

Expected run time (an estimate, not a measurement): WRN-28-2 at 96x96 costs
~9 x 0.43 = ~3.9 GFLOP per image forward, ~12 GFLOP forward + backward; 960
images per step make ~11 TFLOP per step and ~1.2e19 FLOP for the 2**20
protocol steps: about 2.7 days at a sustained 50 TFLOP/s.

Model fit: the WRN-28's receptive field lets the centre of its last 24x24 map
see the whole 96x96 image before pooling (checked by tests/test_configs.py).
"""

from muscle_jax import config_defaults


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg, dataset="stl10", num_classes=10, model_name="wide_resnet", num_labeled=5000
    )
    config.model.kwargs.depth = 28
    config.model.kwargs.width = 2
    config_defaults.apply_variants(config, variants)
    return config
