"""The test oracle: the reference RandAugment's ops, run by PIL, with a given magnitude.

Written from the reference's semantics (USB 0.3.2 / TorchSSL ``randaugment.py``:
each op is one PIL call) for uint8 ``[H, W, C]`` arrays with C = 1 (PIL mode
"L") or 3 ("RGB"). The host's TensorFlow ops and the device's JAX ops are
compared with these, op by op, at fixed magnitudes.
"""

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps

from muscle_jax.data import rand_augment_spec as spec


def to_pil(image: np.ndarray) -> PIL.Image.Image:
    image = np.asarray(image, np.uint8)
    return PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def from_pil(image: PIL.Image.Image) -> np.ndarray:
    array = np.asarray(image, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _affine(img: PIL.Image.Image, matrix) -> PIL.Image.Image:
    return img.transform(img.size, PIL.Image.Transform.AFFINE, matrix)


_PIL_OPS = {
    "autocontrast": lambda img, v: PIL.ImageOps.autocontrast(img),
    "brightness": lambda img, v: PIL.ImageEnhance.Brightness(img).enhance(v),
    "color": lambda img, v: PIL.ImageEnhance.Color(img).enhance(v),
    "contrast": lambda img, v: PIL.ImageEnhance.Contrast(img).enhance(v),
    "equalize": lambda img, v: PIL.ImageOps.equalize(img),
    "identity": lambda img, v: img,
    "posterize": lambda img, v: PIL.ImageOps.posterize(img, max(1, int(v))),
    "rotate": lambda img, v: img.rotate(v),
    "sharpness": lambda img, v: PIL.ImageEnhance.Sharpness(img).enhance(v),
    "shear_x": lambda img, v: _affine(img, (1, v, 0, 0, 1, 0)),
    "shear_y": lambda img, v: _affine(img, (1, 0, 0, v, 1, 0)),
    "solarize": lambda img, v: PIL.ImageOps.solarize(img, v),
    "translate_x": lambda img, v: _affine(img, (1, 0, v * img.size[0], 0, 1, 0)),
    "translate_y": lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1])),
}
assert tuple(_PIL_OPS) == spec.OP_NAMES


def apply_op(name: str, image: np.ndarray, value: float) -> np.ndarray:
    """The reference op ``name`` with magnitude ``value`` (in the op's range) on one image."""
    return from_pil(_PIL_OPS[name](to_pil(image), value))


def cutout(image: np.ndarray, side: float, x_uniform: float, y_uniform: float) -> np.ndarray:
    """The reference Cutout: side ``side`` px, corner draws ``x_uniform``, ``y_uniform``."""
    if side <= 0:
        return np.asarray(image, np.uint8).copy()
    img = to_pil(image).copy()
    height, width = image.shape[:2]
    box = spec.cutout_box(width, height, side, x_uniform, y_uniform)
    fill = spec.cutout_fill(image.shape[-1])
    PIL.ImageDraw.Draw(img).rectangle(box, fill if len(fill) > 1 else fill[0])
    return from_pil(img)


def random_images(rng: np.random.Generator, count: int, size: int, channels: int) -> np.ndarray:
    """uint8 test images: smooth gradients plus noise, some low-contrast, some with a flat area."""
    rows = np.linspace(0, 1, size)[:, None, None]
    cols = np.linspace(0, 1, size)[None, :, None]
    images = []
    for i in range(count):
        base = rng.uniform(0, 255) * rows + rng.uniform(0, 255) * cols
        noise = rng.normal(0, rng.uniform(5, 60), (size, size, channels))
        image = base + noise + rng.uniform(-60, 60, (1, 1, channels))
        if i % 4 == 1:  # low contrast: autocontrast and equalize have work to do
            image = 100 + 0.2 * (image - 100)
        if i % 4 == 2:  # a flat block: contrast/sharpness borders, equalize's lone bins
            image[: size // 2, : size // 2] = rng.uniform(0, 255)
        images.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
    return np.stack(images)
