"""MUSCLE (FixMatch + MI) on your own images: an image folder by class, or an .npz of arrays.

Command:
  python -m muscle_jax.main --config=configs/image_folder.py --config.data.path=DIR \
      --workdir=/tmp/mine
with DIR/train/<class>/*.png|jpg (the labeled images, one folder a class),
DIR/test/<class>/* (same class names) and optionally DIR/unlabeled/** (images
without a class, the unlabeled pool with train/); or --config.data.path=FILE.npz
holding x_train, y_train, x_test, y_test (and optionally x_unlabeled).
Variants (``key=value`` after the colon; fields with ``--config.KEY=VALUE``):
  --config=configs/image_folder.py:num_labeled=30            (a balanced labeled subset)
  --config=configs/image_folder.py:image_size=64             (every image resized to 64x64)
  --config=configs/image_folder.py:machine=accelerator       (the GPU/TPU sizes on any machine)
  --config=configs/image_folder.py:method=flexmatch          (another base, + MI)
  --config=configs/image_folder.py:model=mypkg.nets:MyNet    (a backbone of yours)

Labels: every image of train/ keeps its label (num_labeled=0, the default),
whatever the count of each class. num_labeled=N instead keeps N of them, the
same number from each class (N must divide by the class count), chosen from
the seed, as the benchmarks do; the rest of train/ is then unlabeled. All of
train/ joins the unlabeled pool either way (the FixMatch protocol), with
unlabeled/. Classes come from the folder names (0 classes in the config: the
data's count). docs/custom.md has the details and the error each mistake gives.

Sized for the machine (``machine=auto``, the default, asks JAX's backend
when the config loads: ``cpu`` on a CPU, ``accelerator`` on a GPU or TPU):
- accelerator: the protocol's WRN-28-2 at 32x32 (every image resized to it),
  labeled batch 64, mu 7, EMA decay 0.999, evaluation every 1024 steps, and
  2**16 steps rather than the protocol's 2**20 (ours: a folder is small).
- cpu (ours, for a folder of a few hundred small images in minutes on 2
  cores): the small CNN with six 3x3 conv layers (widths 32, 64, 128, 128,
  128, 128; strides 1 then 2: 32 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1, so the one
  position the classifier reads sees the whole image; five saw a quarter),
  images at their own size up to 32x32 (larger ones resized down to 32x32),
  labeled batch 16, mu 4 (16 + 2 * 64 = 144 images a step), 300 steps
  (``total_steps=3000`` for a longer run), evaluation every 50, EMA decay
  1 - 10 / total_steps (0.967: an average over a tenth of the run; 0.999
  averages over ~1,000 steps, longer than the run).
  Measured (the command above, 2 CPU cores shared with other jobs, load
  average 8-9): three classes of 16x16 pictures, 60, 50 and 40 in train/,
  10 each in test/: 254 s, 108 s of it CPU time; test accuracy 1.000.
Either profile on any machine: ``machine=cpu`` or ``machine=accelerator``;
any key still changes with ``--config.KEY=VALUE``.

Expected accuracy: depends on your data; none is claimed.

Model fit: WRN-28-2 at 32x32 and the CPU's small CNN at up to 32x32 see the
whole image at their last feature map; for larger images choose a deeper or
strided backbone (tests/test_configs.py checks the shipped configs' fit).
"""

from muscle_jax import config_defaults

# The CPU profile's numbers, in one place.
CPU_WIDTHS = (32, 64, 128, 128, 128, 128)
CPU_MAX_IMAGE_SIZE = 32
CPU_BATCH_SIZE = 16
CPU_UNLABELED_RATIO = 4
CPU_TOTAL_STEPS = 300
CPU_EVAL_EVERY = 50
CPU_CHECKPOINT_EVERY = 150
# The accelerator profile's: the protocol's, with a shorter run.
ACCELERATOR_IMAGE_SIZE = 32
ACCELERATOR_TOTAL_STEPS = 2**16


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg,
        dataset="image_folder",
        num_classes=0,  # From the data: the class folders, or the .npz's labels.
        model_name="wrn28_2",
        num_labeled=0,  # Every image of train/ keeps its label.
        total_steps=0,  # 0: the machine's (below).
        image_size=-1,  # -1: the machine's; 0: keep the size; N: N x N.
        model="",
        machine="auto",
    )
    on_cpu = config_defaults.sized_for(variants.machine) == "cpu"
    if on_cpu:
        config.model.name = "small_cnn"
        config.model.kwargs.widths = CPU_WIDTHS
        config.data.batch_size = CPU_BATCH_SIZE
        config.data.unlabeled_ratio = CPU_UNLABELED_RATIO
        total_steps = variants.total_steps or CPU_TOTAL_STEPS
        # An average over a tenth of the run (the EMA must forget the initial weights).
        config.ema_decay = min(0.999, round(1.0 - 10.0 / total_steps, 3))
        config.log_every_steps = CPU_EVAL_EVERY
        eval_every, checkpoint_every = CPU_EVAL_EVERY, CPU_CHECKPOINT_EVERY
    else:
        total_steps = variants.total_steps or ACCELERATOR_TOTAL_STEPS
        protocol = config_defaults.base_config()
        eval_every, checkpoint_every = protocol.eval_every_steps, protocol.checkpoint_every_steps
    config.total_steps = total_steps
    config.eval_every_steps = min(eval_every, total_steps)
    config.checkpoint_every_steps = min(checkpoint_every, total_steps)
    if variants.image_size > 0:
        config.data.image_size = variants.image_size
    elif variants.image_size < 0 and on_cpu:
        config.data.max_image_size = CPU_MAX_IMAGE_SIZE
    elif variants.image_size < 0:
        config.data.image_size = ACCELERATOR_IMAGE_SIZE
    if variants.model:
        config.model.name = variants.model
        config_defaults.set_model_kwargs(config, None)  # The CPU's widths were the CNN's.
    config.data.flip = True  # Natural images; set False for text, digits, anything chiral.
    config_defaults.apply_variants(config, variants)
    return config
