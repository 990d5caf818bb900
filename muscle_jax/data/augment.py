"""Weak and strong image augmentation as TF ops, seeded statelessly.

Every random draw is a function of an explicit `[2]` int64 seed tensor, never
of TensorFlow's global or per-op random state, so an augmented stream is a
pure function of (seed, position in the stream) and a resumed run sees the
same pixels as an uninterrupted one.

Images are float32 `[N, H, W, C]` batches holding integers in [0, 255] until
`normalize` maps them to [-1, 1] at the end of the pipeline.

- weak: random horizontal flip (where the dataset allows it) and
  reflect-pad-and-crop, pad 4 px at 32 px and proportional otherwise.
- strong: weak, then RandAugment and Cutout: the reference's strong
  augmentation (USB 0.3.2's and TorchSSL's ``randaugment.py``), whose ops,
  ranges, number of rounds and Cutout `rand_augment_spec` defines.

The reference runs each RandAugment op as one PIL call on a uint8 image; the
ops here reproduce PIL's arithmetic (Pillow's C code) pixel for pixel on
1-channel (PIL mode "L") and 3-channel ("RGB") images:

- the ImageEnhance ops (brightness, color, contrast, sharpness) are
  ``Image.blend(degenerate, image, factor)``: ``degenerate + factor * (image -
  degenerate)`` in float32, truncated to uint8;
- autocontrast, equalize, posterize and solarize are PIL's per-channel lookup
  tables, built with PIL's (integer or float64) arithmetic;
- the geometric ops are PIL's NEAREST affine transforms with black fill: in
  16.16 fixed point for rotate and shear (Pillow's ``affine_fixed``, taken
  for images under 32768 px), and PIL's ``ImagingScaleAffine`` for translate.

Other channel counts have no PIL mode; there the ops act per channel as on
"RGB" and "grey" (the degenerate image of color and contrast) is the channel
mean rounded half up, where "RGB" has PIL's luma.
"""

import functools
import math

import numpy as np
import tensorflow as tf

from muscle_jax.data import rand_augment_spec as spec


def pad_for_size(size: int) -> int:
    """Reflect-padding for pad-and-crop: 4 px at 32 px, proportional elsewhere (>= 1)."""
    return max(1, int(size / 8 + 0.5))


def normalize(images: tf.Tensor) -> tf.Tensor:
    """[0, 255] -> [-1, 1], float32."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent `[2]` seeds from one, statelessly."""
    seeds = tf.random.experimental.stateless_split(seed, num)
    return [seeds[i] for i in range(num)]


def weak(images: tf.Tensor, seed: tf.Tensor, *, flip: bool) -> tf.Tensor:
    """Flip (if `flip`) and reflect-pad-and-crop each image of a `[N, H, W, C]` batch.

    Done as two batched gathers (crop offsets and mirroring folded into the
    row and column indices), not image by image: several times faster in tf.data.
    """
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    pad = pad_for_size(max(height, width))
    crop_seed, flip_seed = split_seed(seed, 2)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, 0, 2 * pad + 1, tf.int32)
    rows = offsets[:, :1] + tf.range(height)[None]
    cols = offsets[:, 1:] + tf.range(width)[None]
    if flip:
        mirrored = tf.random.stateless_uniform([batch, 1], flip_seed) < 0.5
        cols = tf.where(mirrored, tf.reverse(cols, axis=[1]), cols)
    rows_kept = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(rows_kept, cols, axis=2, batch_dims=1)


# --- Colour ops -------------------------------------------------------------


def _per_image(values: tf.Tensor) -> tf.Tensor:
    """`[N]` -> `[N, 1, 1, 1]`: one value per image, broadcast over its pixels."""
    return values[:, None, None, None]


def _blend(degenerate: tf.Tensor, images: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """PIL's ``Image.blend(degenerate, images, factor)``, what every ImageEnhance op returns.

    PIL computes ``in1 + alpha * (in2 - in1)`` in float32 (alpha is a C float)
    and casts to uint8, truncating; outside alpha in [0, 1] it clips first.
    """
    mixed = degenerate + _per_image(factors) * (images - degenerate)
    return tf.floor(tf.clip_by_value(mixed, 0.0, 255.0))


# PIL's "RGB" -> "L" conversion: ITU-R 601-2 luma in 16-bit fixed point, rounded.
_LUMA_WEIGHTS = (19595, 38470, 7471)


def _grey(images: tf.Tensor) -> tf.Tensor:
    """The `[N, H, W, 1]` grey version of each image: PIL's ``convert("L")`` for RGB."""
    channels = images.shape[-1]
    if channels == 1:
        return images
    values = tf.cast(images, tf.int32)
    if channels == 3:
        weighted = tf.reduce_sum(values * _LUMA_WEIGHTS, axis=-1, keepdims=True)
        grey = tf.bitwise.right_shift(weighted + 0x8000, 16)
    else:
        grey = (tf.reduce_sum(values, axis=-1, keepdims=True) + channels // 2) // channels
    return tf.cast(grey, tf.float32)


def brightness(images: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Brightness(factor)``: a blend with black."""
    return _blend(tf.zeros_like(images), images, factors)


def color(images: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Color(factor)``: a blend with the grey image (the identity on grey)."""
    return _blend(_grey(images), images, factors)


def contrast(images: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Contrast(factor)``: a blend with the grey image's mean, rounded.

    PIL's ``int(mean + 0.5)`` of the grey image, computed on integers:
    ``(2 * sum + count) // (2 * count)`` is the same number, ties included.
    """
    grey = tf.cast(_grey(images), tf.int32)
    count = grey.shape[1] * grey.shape[2]
    total = tf.reduce_sum(grey, axis=[1, 2, 3], keepdims=True)
    mean = tf.cast((2 * total + count) // (2 * count), tf.float32)
    return _blend(mean, images, factors)


# ImageFilter.SMOOTH ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13) as PIL holds it:
# each float32 weight divided by the float32 scale.
_SMOOTH_EDGE = np.float32(1) / np.float32(13)
_SMOOTH_CENTRE = np.float32(5) / np.float32(13)


def _smooth(images: tf.Tensor) -> tf.Tensor:
    """``image.filter(ImageFilter.SMOOTH)`` with PIL's float32 sums, in PIL's order.

    PIL adds 0.5 (to round), then each kernel row's three products (the row
    below first), and truncates; the border rows and columns are copied.
    """
    height, width = images.shape[1], images.shape[2]
    if height < 3 or width < 3:
        return images  # PIL copies an image smaller than the kernel.

    def row_sum(rows: tf.Tensor, centre_weight: np.float32) -> tf.Tensor:
        left, centre, right = rows[:, :, :-2], rows[:, :, 1:-1], rows[:, :, 2:]
        return (left * _SMOOTH_EDGE + centre * centre_weight) + right * _SMOOTH_EDGE

    total = 0.5 + row_sum(images[:, 2:], _SMOOTH_EDGE)
    total = total + row_sum(images[:, 1:-1], _SMOOTH_CENTRE)
    total = total + row_sum(images[:, :-2], _SMOOTH_EDGE)
    inner = tf.floor(tf.clip_by_value(total, 0.0, 255.0))
    middle_rows = tf.concat([images[:, 1:-1, :1], inner, images[:, 1:-1, -1:]], axis=2)
    return tf.concat([images[:, :1], middle_rows, images[:, -1:]], axis=1)


def sharpness(images: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Sharpness(factor)``: a blend with the SMOOTH-filtered image."""
    return _blend(_smooth(images), images, factors)


# --- Lookup-table ops ---------------------------------------------------------


def autocontrast(images: tf.Tensor, magnitudes: tf.Tensor | None = None) -> tf.Tensor:
    """``ImageOps.autocontrast``: each channel's [min, max] stretched to [0, 255].

    PIL's table ``int(i * scale + offset)``, clipped, with ``scale = 255 / (hi -
    lo)`` and ``offset = -lo * scale`` in float64; a flat channel is unchanged.
    """
    del magnitudes  # The reference ignores the op's magnitude.
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    stretched = high > low
    low, high = tf.cast(low, tf.float64), tf.cast(high, tf.float64)
    scale = 255.0 / tf.where(stretched, high - low, 1.0)
    offset = -low * scale
    mapped = tf.cast(images, tf.float64) * scale + offset
    mapped = tf.cast(tf.floor(tf.clip_by_value(mapped, 0.0, 255.0)), tf.float32)
    return tf.where(stretched, mapped, images)


def equalize(images: tf.Tensor, magnitudes: tf.Tensor | None = None) -> tf.Tensor:
    """``ImageOps.equalize``: PIL's integer histogram equalisation, per image and channel.

    With ``h`` the channel's histogram and ``step = (count - h[top]) // 255``
    (``top`` its highest value present), value ``i`` maps to ``(step // 2 +
    sum(h[:i])) // step``, at most 255. A channel with one value, or with
    ``step == 0``, is unchanged.
    """
    del magnitudes  # The reference ignores the op's magnitude.
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    # One row of pixel values per image and channel.
    rows = tf.reshape(tf.transpose(tf.cast(images, tf.int32), [0, 3, 1, 2]), [-1, height * width])
    histogram = tf.math.bincount(rows, minlength=256, maxlength=256, axis=-1)
    top_count = tf.gather(histogram, tf.reduce_max(rows, axis=-1), batch_dims=1)
    step = (height * width - top_count) // 255
    below = tf.cumsum(histogram, axis=-1, exclusive=True)  # Pixels under each value.
    lookup = (step[:, None] // 2 + below) // tf.maximum(step, 1)[:, None]
    lookup = tf.minimum(lookup, 255)  # PIL clips its table to uint8; the top values overshoot.
    equalized = tf.gather(lookup, rows, batch_dims=1)
    values_present = tf.math.count_nonzero(histogram, axis=-1)
    unchanged = (values_present <= 1) | (step == 0)
    equalized = tf.where(unchanged[:, None], rows, equalized)
    equalized = tf.reshape(equalized, [-1, channels, height, width])
    return tf.cast(tf.transpose(equalized, [0, 2, 3, 1]), tf.float32)


def identity(images: tf.Tensor, magnitudes: tf.Tensor | None = None) -> tf.Tensor:
    """The image unchanged."""
    del magnitudes
    return images


def posterize(images: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """``ImageOps.posterize(int(bits))``: keep each value's top ``max(1, int(bits))`` bits.

    PIL rejects more than 8 bits; here they keep all 8.
    """
    kept = tf.clip_by_value(tf.cast(bits, tf.int32), 1, 8)  # The cast truncates, as int().
    dropped = _per_image(8 - kept)
    values = tf.cast(images, tf.int32)
    posterized = tf.bitwise.left_shift(tf.bitwise.right_shift(values, dropped), dropped)
    return tf.cast(posterized, tf.float32)


def solarize(images: tf.Tensor, thresholds: tf.Tensor) -> tf.Tensor:
    """``ImageOps.solarize(threshold)``: values at or above the threshold inverted."""
    return tf.where(images < _per_image(thresholds), images, 255.0 - images)


# --- Geometric ops --------------------------------------------------------------


def _sample(images: tf.Tensor, source_x: tf.Tensor, source_y: tf.Tensor) -> tf.Tensor:
    """Output pixel (x, y) = input pixel (source_x, source_y), black where that is outside.

    ``source_x`` and ``source_y`` are int32 and broadcast to `[N, H, W]`.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    flat_index = tf.where(inside, source_y * width + source_x, 0)
    flat_index = tf.reshape(flat_index, [-1, height * width])
    flat_images = tf.reshape(images, [-1, height * width, channels])
    picked = tf.gather(flat_images, flat_index, batch_dims=1)
    picked = tf.reshape(picked, [-1, height, width, channels])
    return tf.where(inside[..., None], picked, 0.0)


def _pixel_grid(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Output pixel columns `[1, 1, W]` and rows `[1, H, 1]`, int32."""
    height, width = images.shape[1], images.shape[2]
    return tf.range(width)[None, None, :], tf.range(height)[None, :, None]


def _to_fixed(values: tf.Tensor) -> tf.Tensor:
    """Pillow's 16.16 fixed point, ``FIX(v) = floor(v * 65536 + 0.5)``, as `[N, 1, 1]` int32."""
    return tf.cast(tf.floor(values * 65536.0 + 0.5), tf.int32)[:, None, None]


def _affine_fixed(images: tf.Tensor, matrix: tuple[tf.Tensor, ...]) -> tf.Tensor:
    """PIL's NEAREST ``AFFINE`` transform with a rotation or shear part, as Pillow runs it.

    ``matrix`` is PIL's ``(a, b, c, d, e, f)``, each a `[N]` float64: output
    pixel (x, y) reads input pixel (a x + b y + c, d x + e y + f) taken at
    pixel centres. Pillow computes this in 16.16 fixed point (``affine_fixed``,
    its path whenever b or d is nonzero and the image is under 32768 px), the
    pixel-centre offsets folded into the constant terms; the shift by 16 floors.
    With b = d = 0 Pillow's float path (``ImagingScaleAffine``) gives the same
    pixels for the matrices used here (the identity).
    """
    a, b, c, d, e, f = matrix
    column, row = _pixel_grid(images)
    x_constant = _to_fixed(c + a * 0.5 + b * 0.5)
    y_constant = _to_fixed(f + d * 0.5 + e * 0.5)
    source_x = x_constant + row * _to_fixed(b) + column * _to_fixed(a)
    source_y = y_constant + row * _to_fixed(e) + column * _to_fixed(d)
    return _sample(
        images, tf.bitwise.right_shift(source_x, 16), tf.bitwise.right_shift(source_y, 16)
    )


def _round_15_digits(values: tf.Tensor) -> tf.Tensor:
    """Python's ``round(v, 15)`` for |v| <= 1 (the nearest double to the rounded decimal)."""
    return tf.round(values * 1e15) / 1e15


_DEGREES_TO_RADIANS = math.pi / 180.0  # What math.radians multiplies by.


def rotate(images: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    """``Image.rotate(degrees)``: counter-clockwise about the centre, NEAREST, black fill.

    PIL's own matrix, built as ``Image.rotate`` builds it in float64: the angle
    taken modulo 360, cosine and sine of its negated radians rounded to 15
    digits, and the centre ``(w / 2, h / 2)`` moved to the origin and back.
    """
    height, width = images.shape[1], images.shape[2]
    angle = tf.math.floormod(tf.cast(degrees, tf.float64), 360.0)
    radians = -(angle * _DEGREES_TO_RADIANS)
    cos = _round_15_digits(tf.cos(radians))
    sin = _round_15_digits(tf.sin(radians))
    minus_sin = _round_15_digits(-tf.sin(radians))
    centre_x, centre_y = width / 2, height / 2
    c = cos * -centre_x + sin * -centre_y + centre_x
    f = minus_sin * -centre_x + cos * -centre_y + centre_y
    return _affine_fixed(images, (cos, sin, c, minus_sin, cos, f))


def shear_x(images: tf.Tensor, shears: tf.Tensor) -> tf.Tensor:
    """``AFFINE (1, v, 0, 0, 1, 0)``: input x = x + v y."""
    v = tf.cast(shears, tf.float64)
    one, zero = tf.ones_like(v), tf.zeros_like(v)
    return _affine_fixed(images, (one, v, zero, zero, one, zero))


def shear_y(images: tf.Tensor, shears: tf.Tensor) -> tf.Tensor:
    """``AFFINE (1, 0, 0, v, 1, 0)``: input y = v x + y."""
    v = tf.cast(shears, tf.float64)
    one, zero = tf.ones_like(v), tf.zeros_like(v)
    return _affine_fixed(images, (one, zero, zero, v, one, zero))


def _shifted_pixels(fractions: tf.Tensor, size: int, pixels: tf.Tensor) -> tf.Tensor:
    """Pillow's ``ImagingScaleAffine`` for a unit scale: pixel i reads ``floor(v size + 0.5 + i)``.

    Pillow starts at ``v * size + 0.5`` and adds 1.0 per pixel in float64:
    exact here, since ``v`` is a float32 and ``size`` a small integer.
    """
    offsets = tf.cast(fractions, tf.float64)[:, None, None] * size + 0.5
    return tf.cast(tf.floor(offsets + tf.cast(pixels, tf.float64)), tf.int32)


def translate_x(images: tf.Tensor, fractions: tf.Tensor) -> tf.Tensor:
    """``AFFINE (1, 0, v * width, 0, 1, 0)``: the image moved left by v * width."""
    column, row = _pixel_grid(images)
    return _sample(images, _shifted_pixels(fractions, images.shape[2], column), row)


def translate_y(images: tf.Tensor, fractions: tf.Tensor) -> tf.Tensor:
    """``AFFINE (1, 0, 0, 0, 1, v * height)``: the image moved up by v * height."""
    column, row = _pixel_grid(images)
    return _sample(images, column, _shifted_pixels(fractions, images.shape[1], row))


_OPS = spec.implementations(globals())


def apply_op(name: str, images: tf.Tensor, magnitudes) -> tf.Tensor:
    """RandAugment op ``name`` on a `[N, H, W, C]` batch, with one magnitude per image.

    Magnitudes are in the op's own units (`rand_augment_spec.OPS`: degrees,
    enhancement factors, fractions of the image size, ...); they are cast to
    float32, as RandAugment draws them. H, W and C must be static.
    """
    if name not in _OPS:
        raise ValueError(f"Unknown RandAugment op {name!r}; known: {list(_OPS)}.")
    images = tf.cast(images, tf.float32)
    return _OPS[name](images, tf.cast(magnitudes, tf.float32))


# --- Cutout -------------------------------------------------------------------


def cutout(images: tf.Tensor, sides, x_uniform, y_uniform) -> tf.Tensor:
    """The reference Cutout of each image: a `spec.cutout_fill` square, ``sides`` px wide.

    `spec.cutout_box` places it: from the corner draws ``x_uniform`` and
    ``y_uniform`` in [0, 1), with truncating casts, both corners inclusive
    (PIL's ``ImageDraw.rectangle``), clipped to the image. A side of 0 leaves
    the image unchanged. Computed in float64, where these float32 draws are exact.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    sides = tf.cast(sides, tf.float64)[:, None, None]
    # The reference's uniform point, which the square is then centred on.
    x_point = tf.cast(x_uniform, tf.float64)[:, None, None] * width
    y_point = tf.cast(y_uniform, tf.float64)[:, None, None] * height
    x0 = tf.floor(tf.maximum(x_point - sides / 2.0, 0.0))
    y0 = tf.floor(tf.maximum(y_point - sides / 2.0, 0.0))
    x1 = tf.floor(tf.minimum(x0 + sides, float(width)))
    y1 = tf.floor(tf.minimum(y0 + sides, float(height)))
    column, row = (tf.cast(grid, tf.float64) for grid in _pixel_grid(images))
    inside = (sides > 0) & (column >= x0) & (column <= x1) & (row >= y0) & (row <= y1)
    fill = tf.constant(spec.cutout_fill(channels), tf.float32)
    return tf.where(inside[..., None], fill, images)


def cutout_draws(seed: tf.Tensor, batch_size, width: int) -> tuple[tf.Tensor, ...]:
    """Each image's Cutout draws: side ``U(0, 0.5) * width`` px and the corner's two uniforms."""
    uniforms = tf.random.stateless_uniform([batch_size, 3], seed)
    sides = uniforms[:, 0] * (spec.CUTOUT_MAX_FRACTION * width)
    return sides, uniforms[:, 1], uniforms[:, 2]


def random_cutout(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`cutout` with each image's draws from `seed` (`cutout_draws`)."""
    draws = cutout_draws(seed, tf.shape(images)[0], images.shape[2])
    return cutout(images, *draws)


# --- RandAugment ----------------------------------------------------------------


def rand_augment_draws(seed: tf.Tensor, batch_size, num_ops: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Each image's RandAugment draws, one column per round: op indices and uniforms.

    `[N, num_ops]` int32 indices into `spec.OPS`, uniform over the 14 (with
    replacement), and `[N, num_ops]` float32 uniforms in [0, 1) that
    `spec.magnitude` maps into each drawn op's range.
    """
    op_seed, magnitude_seed = split_seed(seed, 2)
    ops = tf.random.stateless_uniform([batch_size, num_ops], op_seed, 0, spec.NUM_OPS, tf.int32)
    uniforms = tf.random.stateless_uniform([batch_size, num_ops], magnitude_seed)
    return ops, uniforms


def _apply_drawn_ops(images: tf.Tensor, op_indices: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
    """Each image through the op it drew, with its magnitude.

    Each op runs only on the images that drew it (partitioned, then stitched
    back), not on the whole batch masked afterwards: 14 times less work.
    """
    positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), op_indices, spec.NUM_OPS)
    groups = tf.dynamic_partition(images, op_indices, spec.NUM_OPS)
    group_uniforms = tf.dynamic_partition(uniforms, op_indices, spec.NUM_OPS)
    changed = [
        _OPS[op.name](group, spec.magnitude(op, group_uniform))
        for op, group, group_uniform in zip(spec.OPS, groups, group_uniforms)
    ]
    return tf.ensure_shape(tf.dynamic_stitch(positions, changed), images.shape)


class RandAugment:
    """The reference RandAugment on `[N, H, W, C]` batches, drawn per image.

    Each image gets `num_ops` rounds; each round draws one of the 14 ops of
    `spec.OPS` uniformly (with replacement) and a magnitude uniform in its
    range (`rand_augment_draws`). Cutout, which the reference runs at the end
    of its RandAugment, is `random_cutout` (`strong` runs both).
    """

    def __init__(self, *, num_ops: int = spec.DEFAULT_ROUNDS):
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}.")
        self.num_ops = num_ops
        # Traced once per image shape and reused by every pipeline that shares this
        # instance (`shared_rand_augment`), and without autograph (data/graph.py):
        # its Python loops are over static values.
        self._traced = tf.function(self._augment, autograph=False)

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return self._traced(images, seed)

    def _augment(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        op_indices, uniforms = rand_augment_draws(seed, tf.shape(images)[0], self.num_ops)
        for round_ in range(self.num_ops):
            images = _apply_drawn_ops(images, op_indices[:, round_], uniforms[:, round_])
        return images


@functools.cache
def shared_rand_augment(num_ops: int = spec.DEFAULT_ROUNDS) -> RandAugment:
    """One `RandAugment` per number of rounds for the whole process, so its graph is traced once."""
    return RandAugment(num_ops=num_ops)


def strong(
    images: tf.Tensor, seed: tf.Tensor, rand_augment: RandAugment, *, flip: bool
) -> tf.Tensor:
    """Weak, then RandAugment, then Cutout, on a `[N, H, W, C]` batch: the reference's strong."""
    weak_seed, augment_seed, cutout_seed = split_seed(seed, 3)
    images = weak(images, weak_seed, flip=flip)
    return random_cutout(rand_augment(images, augment_seed), cutout_seed)
