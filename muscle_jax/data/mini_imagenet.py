"""Mini-ImageNet as semi-supervised papers use it, as a TFDS builder over manually placed images.

All 100 classes, 600 images each at 84x84x3; per class the first 500 images
(by sorted file name) are `train` and the last 100 `test`. This is not the
few-shot 64/16/20 class split. The images cannot be downloaded by TFDS: place
them as `<manual_dir>/<class_name>/*.{jpg,jpeg,png}` and build (see
docs/datasets.md)::

    tfds build mini_imagenet --imports=muscle_jax.data.mini_imagenet \
        --manual_dir=/path/to/mini_imagenet_images --data_dir=/path/to/tfds

Images of another size are resized to 84x84 (bicubic, as most released
copies were made); grey or RGBA images are converted to RGB.
"""

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

_IMAGE_SIZE = 84
_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass
class MiniImagenetConfig(tfds.core.BuilderConfig):
    """Per-class split sizes; the default is the 500 / 100 split of SSL papers."""

    train_per_class: int = 500
    test_per_class: int = 100
    num_classes: int = 100


class MiniImagenet(tfds.core.GeneratorBasedBuilder):
    """Mini-ImageNet for SSL: 100 classes, 500 train / 100 test images per class at 84x84."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[MiniImagenetConfig]] = [
        MiniImagenetConfig(name="ssl", description="500/100 per class.")
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place the Mini-ImageNet images as <manual_dir>/<class_name>/*.jpg (or .png): one "
        "folder per class, 100 classes, 600 images each. The first 500 file names of each "
        "class (sorted) become `train`, the last 100 `test`."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(_IMAGE_SIZE, _IMAGE_SIZE, 3)),
                    "label": tfds.features.ClassLabel(num_classes=self.builder_config.num_classes),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        root = dl_manager.manual_dir
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if len(classes) != config.num_classes:
            raise ValueError(
                f"Mini-ImageNet: expected {config.num_classes} class folders in {root}, "
                f"found {len(classes)}."
            )
        per_class = config.train_per_class + config.test_per_class
        train, test = [], []
        for label, name in enumerate(classes):
            files = sorted(
                p for p in (root / name).iterdir() if p.name.lower().endswith(_EXTENSIONS)
            )
            if len(files) != per_class:
                raise ValueError(
                    f"Mini-ImageNet: class folder {root / name} holds {len(files)} images, "
                    f"expected {per_class} ({config.train_per_class} train + "
                    f"{config.test_per_class} test)."
                )
            train += [(f, label) for f in files[: config.train_per_class]]
            test += [(f, label) for f in files[config.train_per_class :]]
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

    def _generate_examples(self, files):
        for path, label in files:
            key = f"{path.parent.name}/{path.name}"
            yield key, {"image": _load_rgb_84(path), "label": label, "file_name": key}


def _load_rgb_84(path) -> np.ndarray:
    from PIL import Image

    with path.open("rb") as f, Image.open(f) as image:
        image = image.convert("RGB")
        if image.size != (_IMAGE_SIZE, _IMAGE_SIZE):
            image = image.resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.Resampling.BICUBIC)
        return np.asarray(image, np.uint8)
