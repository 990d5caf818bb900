"""MUSCLE (FixMatch + MI) on MNIST with 600 labels: a small CNN (default) or an MLP.

Command:
  python -m muscle_jax.main --config=configs/mnist.py --workdir=/tmp/muscle_mnist
Variants (``key=value`` after the colon; fields with ``--config.KEY=VALUE``):
  --config=configs/mnist.py:model=mlp                   (the anchor's model family;
                                                        --config.model.name=mlp too)
  --config=configs/mnist.py:num_labeled=100,seed=1
  --config=configs/mnist.py:method=none                 (supervised + MI, no consistency)
  --config=configs/mnist.py:method=fixmatch,mi=False    (the base method alone)
  --config=configs/mnist.py:total_steps=5000            (a quick run)
Methods (``method=``): fixmatch (default), mixmatch, mean_teacher, mse, the
modern bases flexmatch, freematch, softmatch, adamatch, uda and dash, debiased
(debiased pseudo-labelling), none (supervised + MI), supervised (labeled data
only); ``mi=False`` drops the MUSCLE term.
Other terms: ``unsupervised=sdt|mio`` in place of MUSCLE's IIC,
``supervised=self_adaptive`` in place of cross-entropy, and ``addon=abc``
(ABC's balanced head) on top of the base (docs/method.md).

Data: TFDS ``mnist`` (60,000 train / 10,000 test). Downloads are off by
default: on a machine with internet run ``tfds build mnist --data_dir=DIR``,
copy DIR to the training machine and pass ``--config.data.data_dir=DIR`` (see
docs/datasets.md). Weak augmentation does not flip digits (dataset catalog).

Labels: 600 (60 per class), the setting of the MNIST anchor below.

Expected accuracy: not measured with this code. Anchors from docs/method.md,
neither of them a MUSCLE result: the self-defined-target method (arXiv
2403.12116) reports 96.6 % with 600 labels and an MLP (``model=mlp`` is the
comparable family, not the same network); IIC reports 99.2 % on MNIST with
no labels at all, a sign of what the MI term alone can reach with a CNN.

Training: the protocol's optimiser, batch 64, mu 7, EMA 0.999 and threshold
0.95 (ours for MNIST: a small CNN does become confident on MNIST), but
2**15 steps rather than 2**20, which is far more than MNIST needs (ours).

Model: the small CNN with six 3x3 conv layers (widths 32, 64, 128, 128, 128,
128; strides 1 then 2): 28 -> 28 -> 14 -> 7 -> 4 -> 2 -> 1, so the one position
the classifier reads sees the whole digit (537 k parameters). Three layers
saw a 9x9 patch of the 28x28 image before pooling: a bag of local strokes.

Expected run time (an estimate, not a measurement): the small CNN costs
~0.018 GFLOP per 28x28 image forward (XLA's cost analysis), ~0.055 forward +
backward, ~53 GFLOP per step of 960 images, ~1.7e15 FLOP for 2**15 steps:
minutes of accelerator time, so the host input pipeline (RandAugment on 960
images per step, 31 M images in all) sets the pace: one to two hours on a
16-core GPU host at 5,000-10,000 images per second; most of a day on 2 CPU
cores (use ``total_steps=5000`` there).
"""

from muscle_jax import config_defaults

MODELS = ("small_cnn", "mlp")


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg,
        dataset="mnist",
        num_classes=10,
        model_name="small_cnn",
        num_labeled=600,
        total_steps=2**15,
        model="small_cnn",
    )
    if variants.model not in MODELS:
        raise ValueError(f"Config arg model={variants.model!r} is not one of {MODELS}.")
    config.model.name = variants.model  # mlp: 256-256.
    if variants.model == "small_cnn":
        # 28 -> 28 -> 14 -> 7 -> 4 -> 2 -> 1: the last layer's one position sees the
        # whole digit (three layers saw a 9x9 patch before pooling: a bag of strokes).
        config.model.kwargs.widths = (32, 64, 128, 128, 128, 128)
    config_defaults.apply_variants(config, variants)
    return config
