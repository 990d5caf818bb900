"""Tiny MUSCLE run for tests: a small CNN on mock or digits-sized data, a few steps.

Command (on the embedded digits data, about half a minute on 2 CPU cores):
  python -m muscle_jax.main --config=configs/tiny.py --workdir=/tmp/muscle_tiny
Expected accuracy: meaningless (tens of steps); this config exercises the code.
Variants: --config=configs/tiny.py:method=mixmatch,mi=False,seed=1,dataset=cifar10
  --config=configs/tiny.py:unsupervised=sdt,supervised=self_adaptive

Model fit: four small conv layers take 8x8 digits to 1x1, so the classifier sees
the whole image (checked by tests/test_configs.py).
"""

from muscle_jax import config_defaults


def get_config(arg=None):
    arg = config_defaults.parse_arg(
        arg, dataset="digits", num_labeled=40, seed=0, **config_defaults.METHOD_VARIANTS
    )
    config = config_defaults.base_config()
    config.data.name = arg.dataset
    config.data.num_classes = 10
    config.data.num_labeled = arg.num_labeled
    config.seed = arg.seed
    config.model.name = "small_cnn"
    config.model.kwargs.widths = (8, 16, 16, 16)  # 8x8 -> 1x1: sees the whole image.
    config.data.batch_size = 8
    config.data.unlabeled_ratio = 2
    config.data.eval_batch_size = 64
    config.total_steps = 12
    config.log_every_steps = 4
    config.eval_every_steps = 6
    config.checkpoint_every_steps = 6
    config.keep_checkpoints = 2
    config.optimizer.learning_rate = 0.05
    config.ema_decay = 0.9
    config.loss.fixmatch.threshold = 0.5
    config.loss.mio.projector_dim = 16  # A tiny model's embedding.
    config_defaults.apply_variants(config, arg)
    return config
