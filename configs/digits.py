"""MUSCLE (FixMatch + MI) on scikit-learn's digits: the default CPU-sized run, no data to prepare.

Command (2 CPU cores, about 2.5 minutes):
  python -m muscle_jax.main --config=configs/digits.py --workdir=/tmp/muscle_digits
Variants:
  --config=configs/digits.py:method=mixmatch,mi=False,num_labeled=50,seed=1
  --config=configs/digits.py:total_steps=300      (a quick smoke run)
  --config=configs/digits.py:unsupervised=sdt,total_steps=60   (another unsupervised term)
  --config=configs/digits.py --config.loss.fixmatch.threshold=0.8

Data: the `digits` dataset embedded in scikit-learn (1,797 real 8x8 grey images,
10 classes; a fixed stratified split leaves 1,497 for training and 300 for
test). Nothing to download or prepare.

Expected accuracy (measured with this code on 2 CPU cores; EMA model, the
median of the evaluations at steps 1200-1500; 300 test images, so one image
is 0.33 points): the default run, seed 0, 99.0 % in 136 s. Over seeds 0-2,
in 600-step runs of ``python -m muscle_jax.experiments`` (docs/results.md,
version 0.1.0): with 100 labels MUSCLE 97.7 +- 0.3 %, FixMatch alone 96.7 +- 0.6,
supervised only 92.4 +- 0.8; with 20 labels 96.9 +- 1.0 against 94.4 +- 1.5.
At 100 labels digits is near its ceiling; fewer or biased labels are where
the methods separate.

Choices (ours, for a tiny CNN and a tiny dataset, not the protocol):
- Model: the small CNN with four 3x3 conv layers (widths 32, 64, 128, 128;
  strides 1, 2, 2, 2): 8x8 -> 8x8 -> 4x4 -> 2x2 -> 1x1, so the classifier reads
  one position that sees the whole digit. With three layers each position of
  the last 2x2 map saw at most 6x6 of the 8x8 image (tests/test_configs.py
  measures this for every config).
- 100 labels (10 per class), labeled batch 32, mu = 4: 32 + 2 * 128 = 288 8x8
  images per step. Both batches and eval_batch_size are multiples of 8, so the
  config also runs on 8 (simulated) devices.
- total_steps = 1500, eval every 100, checkpoint every 500; the report is the
  median of the last 5 evaluations in the last quarter of the run, i.e. of
  steps 1200, 1300, 1400 and 1500 (the protocol's 20 would reach back to the
  first third of so short a run). A ``total_steps=300`` smoke run reports its
  final evaluation alone.
- EMA decay 0.99 (0.999 averages over ~1000 steps, most of this run).
- The protocol's FixMatch threshold 0.95 is kept: with the earlier 3-layer
  CNN it was passed by a third of the unlabeled batch by step 100 and by 84 %
  by step 300, and 0.8 did no better (98.7 % against 99.0 %, one seed).
- MI weight 3 (the library default is 1): see the comment in get_config.
"""

from muscle_jax import config_defaults

# The numbers to tune after measuring, in one place.
NUM_LABELED = 100
BATCH_SIZE = 32
UNLABELED_RATIO = 4
TOTAL_STEPS = 1500
EVAL_EVERY = 100
CHECKPOINT_EVERY = 500
WIDTHS = (32, 64, 128, 128)
MI_WEIGHT = 3.0


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg,
        dataset="digits",
        num_classes=10,
        model_name="small_cnn",
        num_labeled=NUM_LABELED,
        total_steps=TOTAL_STEPS,
    )
    # 8x8 -> 8x8 -> 4x4 -> 2x2 -> 1x1: the last layer's one position sees the whole image.
    config.model.kwargs.widths = WIDTHS
    config.data.batch_size = BATCH_SIZE
    config.data.unlabeled_ratio = UNLABELED_RATIO
    config.ema_decay = 0.99
    # Kept from base_config(): lr 0.03 with the cosine decay, FixMatch threshold 0.95.
    config.log_every_steps = 50
    config.eval_every_steps = min(EVAL_EVERY, variants.total_steps)
    config.checkpoint_every_steps = min(CHECKPOINT_EVERY, variants.total_steps)
    config.keep_checkpoints = 2
    config.median_of_last_evals = 5
    # Tuned (the MUSCLE term's only tuned setting): the MI-weight ablation on
    # seeds 100-102 (20 labels, 600 steps; the reported seeds are 0-2) gave
    # base 89.8 +- 4.5 %, weight 1 92.4 +- 4.0, weight 3 95.2 +- 1.6; weight 3
    # was the only one to rescue the class seed 101 lost at every lower weight.
    # Weights 1 and 3 are not separated at n=3 (paired CI [-8.5, +14.1] points).
    config.loss.unsupervised_weight = MI_WEIGHT
    config_defaults.apply_variants(config, variants)
    return config
