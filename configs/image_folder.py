"""MUSCLE (FixMatch + MI) on your own images: an image folder by class, or an .npz of arrays.

Command:
  python -m muscle_jax.main --config=configs/image_folder.py --config.data.path=DIR \
      --workdir=/tmp/mine
with DIR/train/<class>/*.png|jpg (the labeled pool, one folder a class),
DIR/test/<class>/* (same class names) and optionally DIR/unlabeled/** (images
without a class, added to the unlabeled pool); or --config.data.path=FILE.npz
holding x_train, y_train, x_test, y_test (and optionally x_unlabeled).
Variants (``key=value`` after the colon; fields with ``--config.KEY=VALUE``):
  --config=configs/image_folder.py:num_labeled=100,image_size=64
  --config=configs/image_folder.py:method=flexmatch          (another base, + MI)
  --config=configs/image_folder.py:model=mypkg.nets:MyNet    (a backbone of yours)
num_labeled images of train/ keep their labels (the same number from each
class; it must divide by the class count); the rest of train/ joins the
unlabeled pool. Classes come from the folder names (0 classes in the config:
the data's count). Images are resized to image_size x image_size (0: keep the
size, which must then be one for all). docs/custom.md has the details and
the errors each mistake gives.

Expected accuracy: depends on your data; none is claimed.

Model fit: WRN-28-2 at 32x32 sees the whole image at its last 8x8 map; for
larger images choose a deeper or strided backbone (tests/test_configs.py
checks the shipped configs' fit for their datasets' sizes).
"""

from muscle_jax import config_defaults


def get_config(arg=None):
    config, variants = config_defaults.dataset_config(
        arg,
        dataset="image_folder",
        num_classes=0,  # From the data: the class folders, or the .npz's labels.
        model_name="wrn28_2",
        num_labeled=40,
        total_steps=2**16,
        image_size=32,
        model="",
    )
    config.data.image_size = variants.image_size or None
    if variants.model:
        config.model.name = variants.model
    config.data.flip = True  # Natural images; set False for text, digits, anything chiral.
    config_defaults.apply_variants(config, variants)
    return config
