"""Weak and strong augmentation as JAX ops, run inside the jitted train step.

With ``data.augment_on="device"`` the host pipeline only reads, shuffles and
batches: it yields each stream's images as uint8 with the stream position and
data shard of every example (`streams.augmented_batches`), and `views` makes
the augmented views on the accelerator, sharded with the batch, in the same
layout the host would have yielded ("labeled", "labeled_strong",
"unlabeled_a", "unlabeled_b" and, for "weak_strong_weak", "unlabeled_c", as
float32 in [-1, 1]).

- weak: random horizontal flip (where the dataset allows it) and
  reflect-pad-and-crop, with the host's padding (`augment.pad_for_size`);
- strong: weak, then the reference RandAugment and Cutout as
  `rand_augment_spec` defines them (USB 0.3.2's and TorchSSL's
  ``randaugment.py``): ``num_ops`` rounds (``data.rand_augment_ops``), each one
  of the 14 ops drawn uniformly with a magnitude uniform in its range, then a
  square of side ``U(0, 0.5) x`` width filled with `spec.cutout_fill`.

The 14 ops are PIL's (Pillow's C code, as the reference calls it) on a float32
``[H, W, C]`` image holding integers in [0, 255], written here so that they run
under `jax.jit` and `jax.vmap` and are chosen per image by `lax.switch`:

- Brightness, Color, Contrast, Sharpness are ``Image.blend(degenerate, image,
  v)``: float32 ``in1 + v * (in2 - in1)`` truncated (clipped outside [0, 1]).
  The degenerate images are black; the "L" conversion (PIL's 16.16 luma);
  a flat image of the "L" image's rounded mean; and ImageFilter.SMOOTH,
  computed in integers (``(2 * (sum of the 3x3 + 4 x centre) + 13) // 26``:
  PIL's float32 sum plus 0.5 is never within its rounding error of an
  integer, so this is its value; border pixels unchanged).
- AutoContrast, Equalize, Posterize, Solarize are per-channel lookup tables.
  Equalize is PIL's integer algorithm (note its ``// 255``). AutoContrast's
  table is ``int(i * scale + offset)`` in Python floats; with no float64 in
  JAX it is the exact quotient ``(i - lo) * 255 // (hi - lo)`` less one at the
  12094 (lo, hi, i) where float64 rounds an exact integer down (enumerated
  once with numpy, `_autocontrast_shortfalls`).
- Rotate, ShearX, ShearY run PIL's 16.16 fixed-point affine transform
  (``affine_fixed``: coefficients ``floor(a * 65536 + 0.5)``, source pixel
  ``coordinate >> 16``, black outside); TranslateX/Y PIL's float "scale" path,
  source ``x + floor(v * width + 0.5)``, evaluated exactly from float32 parts.

So every op but Rotate equals PIL's bit for bit, and so does Cutout (its box
is integer arithmetic on the draws' 2**-23 grid); tests/test_device_augment.py
checks each on a grid of magnitudes. Rotate's fixed-point coefficients come
from a cosine and sine that PIL has in float64 and float32 to ~1e-7: about 4
pixels in 10^6 (1 to 4 pixels in 0.25 % of 32 px rotations) read a
neighbouring source pixel.

Why not dm-pix: its brightness adds a delta, its contrast blends towards each
channel's own mean, its affine transform and rotation interpolate with
`map_coordinates` about ``(size - 1) / 2``, and it has no equalize,
autocontrast, posterize or PIL-style sharpness; only its solarize means the
reference's, and that is one ``where``.

Channel counts: PIL's ops are defined for "L" (C = 1) and "RGB" (C = 3). For
any other C the per-channel ops work per channel and the "L" image
(Color's degenerate, Contrast's mean) is the channels' rounded mean.

Every random draw of an image is a function of (seed, stream, data shard,
stream position, view) alone: not of the step, the batch it is in or the
device it lands on. So a resumed run augments exactly as an uninterrupted one,
and any device count or batch size gives the same pixels. The draws are not
the host's (TensorFlow's stateless RNG is not JAX's), so the two places give
equally distributed, not equal, views.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from muscle_jax import input_pipeline
from muscle_jax.data import augment
from muscle_jax.data import rand_augment_spec as spec
from muscle_jax.data.streams import LABELED, UNLABELED

LEVELS = 256


# --- Weak ------------------------------------------------------------------


def pad_and_crop(image: jax.Array, offsets: jax.Array, pad: int) -> jax.Array:
    """The ``[H, W, C]`` window at ``offsets`` (row, column) of ``image``, reflect-padded."""
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return jax.lax.dynamic_slice(padded, (offsets[0], offsets[1], 0), image.shape)


def weak(image: jax.Array, key: jax.Array, *, flip: bool) -> jax.Array:
    """Flip (if ``flip``, with probability 1/2) and reflect-pad-and-crop one ``[H, W, C]`` image."""
    height, width = image.shape[:2]
    pad = augment.pad_for_size(max(height, width))
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
    image = pad_and_crop(image, offsets, pad)
    if flip:
        image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
    return image


# --- PIL's pixel arithmetic ---------------------------------------------------


def grey(pixels: jax.Array) -> jax.Array:
    """PIL's "L" image ``[H, W, 1]`` of int ``[H, W, C]`` pixels (C = 3: its 16.16 luma)."""
    channels = pixels.shape[-1]
    if channels == 1:
        return pixels
    if channels == 3:
        weights = jnp.array([19595, 38470, 7471], jnp.int32)
        return (jnp.sum(pixels * weights, axis=-1, keepdims=True) + 0x8000) >> 16
    return (2 * jnp.sum(pixels, axis=-1, keepdims=True) + channels) // (2 * channels)


def blend(degenerate: jax.Array, image: jax.Array, factor: jax.Array) -> jax.Array:
    """PIL's ``Image.blend(degenerate, image, factor)`` of integer-valued float images.

    PIL computes ``in1 + alpha * (in2 - in1)`` in float32, rounding the product
    before the sum, and truncates (clips when ``alpha`` is outside [0, 1]).
    XLA may fuse a product and a sum into one FMA (it did on CPU, inside the
    ops' `lax.switch`; GPU compilers contract too), which skips the product's
    rounding; the product is therefore formed from
    ``alpha``'s two halves, whose products are exact, so that either way it is
    rounded once.
    """
    upper, lower = _split(jnp.asarray(factor, jnp.float32))
    difference = image - degenerate
    product = upper * difference + lower * difference
    return jnp.clip(jnp.trunc(degenerate + product), 0.0, 255.0)


def apply_luts(pixels: jax.Array, luts: jax.Array) -> jax.Array:
    """``luts[c, pixels[..., c]]`` for int ``[H, W, C]`` pixels, ``[C, 256]`` tables, as float."""
    channels = pixels.shape[-1]
    index = pixels + LEVELS * jnp.arange(channels, dtype=jnp.int32)
    return luts.reshape(-1)[index].astype(jnp.float32)


def histograms(pixels: jax.Array) -> jax.Array:
    """Per-channel ``[C, 256]`` counts of int ``[H, W, C]`` pixels (PIL's ``histogram()``)."""
    channels = pixels.shape[-1]
    index = (pixels + LEVELS * jnp.arange(channels, dtype=jnp.int32)).reshape(-1)
    counts = jnp.zeros(LEVELS * channels, jnp.int32).at[index].add(1)
    return counts.reshape(channels, LEVELS)


def _pixels(image: jax.Array) -> jax.Array:
    return image.astype(jnp.int32)


def _floor_half_up(value: jax.Array) -> jax.Array:
    """``floor(value + 0.5)`` as an int, exactly (``value + 0.5`` itself may round)."""
    floor = jnp.floor(value)
    return (floor + (value >= floor + 0.5)).astype(jnp.int32)


def _fixed(value: jax.Array) -> jax.Array:
    """PIL's 16.16 ``FIX(v) = floor(v * 65536 + 0.5)`` (the product is exact)."""
    return _floor_half_up(jnp.asarray(value, jnp.float32) * 65536.0)


def _split(value: jax.Array) -> tuple[jax.Array, jax.Array]:
    """float32 ``value`` as ``upper + lower``, each with at most 12 significant bits.

    Either times an integer below 2**12 (or a power of two) is exact in float32.
    """
    bits = jax.lax.bitcast_convert_type(value, jnp.uint32) & jnp.uint32(0xFFFFF000)
    upper = jax.lax.bitcast_convert_type(bits, jnp.float32)
    return upper, value - upper


def _floor_product_half_up(value: jax.Array, factor: int) -> jax.Array:
    """``floor(value * factor + 0.5)`` as float64 has it, for float32 ``value`` and int ``factor``.

    float32 rounds the product; where that rounding lands exactly half-way
    between integers, the sign of its error decides. The error is exact from
    `_split`'s halves (``factor`` below 2**12, or a power of two).
    """
    value = jnp.asarray(value, jnp.float32)
    product = value * factor
    rounded = _floor_half_up(product)
    upper, lower = _split(value)
    error = (upper * factor - product) + lower * factor
    return rounded - ((product == rounded - 0.5) & (error < 0)).astype(jnp.int32)


# --- The 14 ops (spec.OPS order), each ``op(image, magnitude) -> image`` ------


def autocontrast(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``ImageOps.autocontrast``: each channel's [lo, hi] stretched to [0, 255]."""
    del magnitude
    pixels = _pixels(image)
    low = jnp.min(pixels, axis=(0, 1))[:, None]
    high = jnp.max(pixels, axis=(0, 1))[:, None]
    levels = jnp.arange(LEVELS, dtype=jnp.int32)[None]
    quotient = (levels - low) * 255 // jnp.maximum(high - low, 1)
    luts = jnp.clip(quotient - _autocontrast_shortfall(low, high), 0, 255)
    return apply_luts(pixels, jnp.where(high > low, luts, levels))


@functools.cache
def _autocontrast_shortfalls() -> tuple[np.ndarray, np.ndarray]:
    """Where PIL's autocontrast table is one below the exact quotient.

    PIL's ``int(i * scale + offset)`` (``scale = 255 / (hi - lo)``, ``offset =
    -lo * scale``, Python floats) falls just short of an exact integer
    quotient at 12094 (lo, hi, i) (e.g. lo 0, hi 25: i = 25 maps to 254);
    elsewhere it is the quotient. Returned as the sorted pairs ``lo * 256 +
    hi`` that have any (5958) and, per pair, its levels i (at most 17, padded
    with 0, which is never one). numpy's float64 is Python's.
    """
    levels = np.arange(LEVELS)
    pairs, shortfalls = [], []
    for low in range(LEVELS - 1):
        high = np.arange(low + 1, LEVELS)[:, None]
        scale = 255.0 / (high - low)
        python = np.clip((levels * scale + -low * scale).astype(np.int64), 0, 255)
        exact = np.clip((levels - low) * 255 // (high - low), 0, 255)
        assert np.all((python == exact) | (python == exact - 1))
        for row in np.nonzero(np.any(python != exact, axis=1))[0]:
            pairs.append(low * LEVELS + high[row, 0])
            shortfalls.append(np.nonzero(python[row] != exact[row])[0])
    padded = np.zeros((len(pairs), max(map(len, shortfalls))), np.uint8)
    for row, found in enumerate(shortfalls):
        padded[row, : len(found)] = found
    return np.asarray(pairs, np.int32), padded


def _autocontrast_shortfall(low: jax.Array, high: jax.Array) -> jax.Array:
    """``[C, 256]``: 1 where PIL's table for channels (``low``, ``high``) ``[C, 1]`` is short."""
    pairs, shortfalls = (jnp.asarray(table) for table in _autocontrast_shortfalls())
    key = low * LEVELS + high
    # A count rather than a binary search: one query per channel, and no loop to compile.
    row = jnp.minimum(jnp.sum(pairs < key, axis=1, keepdims=True), pairs.size - 1)
    found = pairs[row] == key
    levels = shortfalls[row[:, 0]].astype(jnp.int32)
    short = jnp.any(levels[:, :, None] == jnp.arange(LEVELS), axis=1)
    return (found & short).astype(jnp.int32)


def brightness(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``ImageEnhance.Brightness(v)``: blend with black."""
    return blend(jnp.zeros_like(image), image, magnitude)


def color(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``ImageEnhance.Color(v)``: blend with the "L" image (the identity on one channel)."""
    luma = grey(_pixels(image)).astype(jnp.float32)
    return blend(jnp.broadcast_to(luma, image.shape), image, magnitude)


def contrast(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``ImageEnhance.Contrast(v)``: blend with the "L" image's mean, ``int(mean + 0.5)``."""
    luma = grey(_pixels(image))
    count = luma.size
    mean = (2 * jnp.sum(luma) + count) // (2 * count)
    return blend(jnp.full_like(image, mean.astype(jnp.float32)), image, magnitude)


def equalize(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``ImageOps.equalize``: PIL's integer histogram equalisation, per channel."""
    del magnitude
    pixels = _pixels(image)
    counts = histograms(pixels)
    levels = jnp.arange(LEVELS, dtype=jnp.int32)
    last = jnp.max(jnp.where(counts > 0, levels, -1), axis=1, keepdims=True)
    last_count = jnp.take_along_axis(counts, last, axis=1)
    step = (pixels.shape[0] * pixels.shape[1] - last_count) // 255
    below = jnp.cumsum(counts, axis=1) - counts
    luts = jnp.clip((step // 2 + below) // jnp.maximum(step, 1), 0, 255)
    keep = (jnp.sum(counts > 0, axis=1, keepdims=True) <= 1) | (step == 0)
    return apply_luts(pixels, jnp.where(keep, levels, luts))


def identity(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """The image unchanged."""
    del magnitude
    return image


def posterize(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``ImageOps.posterize(max(1, int(v)))``: keep the top bits."""
    bits = jnp.clip(jnp.trunc(magnitude).astype(jnp.int32), 1, 8)
    dropped = 8 - bits
    return ((_pixels(image) >> dropped) << dropped).astype(jnp.float32)


def rotate(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``Image.rotate(v)``: degrees counter-clockwise about (w / 2, h / 2), nearest, black fill.

    PIL's matrix ``(cos, -sin, c, sin, cos, f)`` with its centre terms, in
    float32 (PIL: float64), then its fixed-point transform.
    """
    height, width = image.shape[:2]
    radians = jnp.deg2rad(jnp.asarray(magnitude, jnp.float32))
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    centre_x, centre_y = width / 2, height / 2
    # PIL's c + a / 2 + b / 2 and f + d / 2 + e / 2, regrouped about the centre.
    x_origin = centre_x - cos * (centre_x - 0.5) + sin * (centre_y - 0.5)
    y_origin = centre_y - sin * (centre_x - 0.5) - cos * (centre_y - 0.5)
    coefficients = [_fixed(v) for v in (cos, -sin, x_origin, sin, cos, y_origin)]
    return affine_fixed(image, *coefficients)


def sharpness(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``ImageEnhance.Sharpness(v)``: blend with ``ImageFilter.SMOOTH``."""
    return blend(smooth(image), image, magnitude)


def smooth(image: jax.Array) -> jax.Array:
    """``ImageFilter.SMOOTH`` (3x3 ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13``), border unchanged."""
    pixels = _pixels(image)
    height, width = pixels.shape[:2]
    padded = jnp.pad(pixels, ((1, 1), (1, 1), (0, 0)))
    windows = [padded[r : r + height, c : c + width] for r in range(3) for c in range(3)]
    weighted = sum(windows) + 4 * pixels
    smoothed = (2 * weighted + 13) // 26
    rows = jnp.arange(height)[:, None, None]
    cols = jnp.arange(width)[None, :, None]
    inner = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    return jnp.where(inner, smoothed, pixels).astype(jnp.float32)


def shear_x(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``AFFINE (1, v, 0, 0, 1, 0)``: row y reads x + v * (y + 0.5), fixed point."""
    shear = _fixed(magnitude)
    half = 32768 + _fixed(jnp.asarray(magnitude, jnp.float32) * 0.5)
    return affine_fixed(image, 65536, shear, half, 0, 65536, 32768)


def shear_y(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``AFFINE (1, 0, 0, v, 1, 0)``: column x reads y + v * (x + 0.5), fixed point."""
    shear = _fixed(magnitude)
    half = 32768 + _fixed(jnp.asarray(magnitude, jnp.float32) * 0.5)
    return affine_fixed(image, 65536, 0, 32768, shear, 65536, half)


def solarize(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``ImageOps.solarize(threshold=v)``: invert the levels at or above ``v``."""
    return jnp.where(image < magnitude, image, 255.0 - image)


def translate_x(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``AFFINE (1, 0, v * width, 0, 1, 0)``: PIL's scale path reads x + floor(v * w + 0.5)."""
    width = image.shape[1]
    return shift(image, _floor_product_half_up(magnitude, width), 0)


def translate_y(image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``AFFINE (1, 0, 0, 0, 1, v * height)``."""
    height = image.shape[0]
    return shift(image, 0, _floor_product_half_up(magnitude, height))


# --- Sampling ------------------------------------------------------------------


def sample(image: jax.Array, x_source: jax.Array, y_source: jax.Array) -> jax.Array:
    """``image[y_source, x_source]`` per output pixel, black where the source is outside."""
    height, width = image.shape[:2]
    inside = (x_source >= 0) & (x_source < width) & (y_source >= 0) & (y_source < height)
    gathered = image[jnp.clip(y_source, 0, height - 1), jnp.clip(x_source, 0, width - 1)]
    return jnp.where(inside[..., None], gathered, 0.0)


def affine_fixed(image: jax.Array, a0, a1, a2, a3, a4, a5) -> jax.Array:
    """PIL's ``affine_fixed``: 16.16 fixed-point source coordinates, nearest, black outside.

    Output (x, y) reads ``((a2 + a1 y + a0 x) >> 16, (a5 + a4 y + a3 x) >> 16)``;
    ``a2`` and ``a5`` are already at the first pixel's centre. PIL takes this
    path whenever the transformed corners lie within +-32768 px: every image here.
    """
    height, width = image.shape[:2]
    rows = jnp.arange(height, dtype=jnp.int32)[:, None]
    cols = jnp.arange(width, dtype=jnp.int32)[None, :]
    x_fixed = a2 + a1 * rows + a0 * cols
    y_fixed = a5 + a4 * rows + a3 * cols
    return sample(image, x_fixed >> 16, y_fixed >> 16)


def shift(image: jax.Array, x_offset: jax.Array, y_offset: jax.Array) -> jax.Array:
    """Output (x, y) reads (x + ``x_offset``, y + ``y_offset``), black outside."""
    height, width = image.shape[:2]
    rows = jnp.arange(height, dtype=jnp.int32)[:, None]
    cols = jnp.arange(width, dtype=jnp.int32)[None, :]
    x_source = jnp.broadcast_to(cols + x_offset, (height, width))
    y_source = jnp.broadcast_to(rows + y_offset, (height, width))
    return sample(image, x_source, y_source)


OP_FUNCTIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = spec.implementations(
    globals()
)


def op_names() -> tuple[str, ...]:
    """The ops' names in the order `op_choices` indexes them (the reference's)."""
    return spec.OP_NAMES


def apply_op(index: jax.Array, image: jax.Array, magnitude: jax.Array) -> jax.Array:
    """Op ``index`` (traced) with ``magnitude`` in that op's units, on one ``[H, W, C]`` image.

    Under `jax.vmap` the switch becomes a selection: every op runs on every
    image and each keeps its own op's result.
    """
    magnitude = jnp.asarray(magnitude, jnp.float32)
    return jax.lax.switch(index, tuple(OP_FUNCTIONS.values()), image, magnitude)


def op_magnitude(index: jax.Array, uniform: jax.Array) -> jax.Array:
    """`spec.magnitude` of op ``index`` (traced) at ``uniform``, in float32."""
    uniform = jnp.asarray(uniform, jnp.float32)
    return jnp.stack([spec.magnitude(op, uniform) for op in spec.OPS])[index]


# --- RandAugment and Cutout ----------------------------------------------------


def _draw_round(round_key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(the op a round applies, the uniform its magnitude is mapped from)."""
    choice_key, magnitude_key = jax.random.split(round_key)
    return jax.random.randint(choice_key, (), 0, spec.NUM_OPS), jax.random.uniform(magnitude_key)


def op_draws(key: jax.Array, *, num_ops: int = spec.DEFAULT_ROUNDS) -> tuple[jax.Array, jax.Array]:
    """``(indices, uniforms)``, each ``[num_ops]``: what `rand_augment` applies with ``key``."""
    return jax.vmap(_draw_round)(jax.random.split(key, num_ops))


def op_choices(key: jax.Array, *, num_ops: int = spec.DEFAULT_ROUNDS) -> jax.Array:
    """The ops `rand_augment` applies with ``key``, in order (indices into `op_names`)."""
    return op_draws(key, num_ops=num_ops)[0]


def rand_augment(
    image: jax.Array, key: jax.Array, *, num_ops: int = spec.DEFAULT_ROUNDS
) -> jax.Array:
    """The reference RandAugment of one float ``[H, W, C]`` image of integers in [0, 255].

    ``num_ops`` rounds, each one of the 14 ops drawn uniformly (with
    replacement) at a magnitude uniform in its range.
    """
    if num_ops == 0:
        return image
    indices, uniforms = op_draws(key, num_ops=num_ops)

    def one_round(image, draw):
        index, uniform = draw
        return apply_op(index, image, op_magnitude(index, uniform)), None

    image, _ = jax.lax.scan(one_round, image, (indices, uniforms))
    return image


def _floor_scaled(terms: list[tuple[jax.Array, int]], shift: int) -> jax.Array:
    """``floor(sum(units * multiplier) / 2**shift)`` in int32 without overflow.

    ``units`` below 2**25 in size, ``multiplier`` (an image side) below 2**16,
    ``shift`` >= 12: each ``units`` is split at bit 12, so no product exceeds 2**29.
    """
    upper = sum((units >> 12) * multiplier for units, multiplier in terms)
    lower = sum((units & 0xFFF) * multiplier for units, multiplier in terms)
    return (upper + (lower >> 12)) >> (shift - 12)


def cutout_box(uniforms: jax.Array, height: int, width: int) -> tuple[jax.Array, ...]:
    """`spec.cutout_box` ``(x0, y0, x1, y1)`` for uniforms (side, x, y) on a 2**-23 grid.

    ``jax.random.uniform`` draws float32 multiples of 2**-23, so in units of
    2**-25 px every quantity is an integer: side ``= u * width / 2``, ``x0 =
    max(0, floor(u_x * width - side / 2))``, ``x1 = min(width, x0 +
    floor(side))``, the same for y; exactly as the reference's float64.
    """
    side, x, y = (jnp.asarray(uniforms, jnp.float32) * 2.0**23).astype(jnp.int32)
    x0 = jnp.maximum(0, _floor_scaled([(4 * x, width), (-side, width)], 25))
    y0 = jnp.maximum(0, _floor_scaled([(4 * y, height), (-side, width)], 25))
    length = _floor_scaled([(side, width)], 24)
    return x0, y0, jnp.minimum(width, x0 + length), jnp.minimum(height, y0 + length)


def cutout(image: jax.Array, uniforms: jax.Array) -> jax.Array:
    """The reference Cutout of one ``[H, W, C]`` image: side ``uniforms[0] x width / 2`` px.

    The rectangle `cutout_box` is filled corners inclusive, with
    `spec.cutout_fill`; none at side 0.
    """
    height, width, channels = image.shape
    x0, y0, x1, y1 = cutout_box(uniforms, height, width)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1) & (uniforms[0] > 0)
    fill = jnp.asarray(spec.cutout_fill(channels), image.dtype)
    return jnp.where(inside[..., None], fill, image)


def cutout_uniforms(key: jax.Array) -> jax.Array:
    """The three uniforms (side, corner x, corner y) `cutout` takes, drawn from ``key``."""
    return jax.random.uniform(key, (3,))


def strong(
    image: jax.Array, key: jax.Array, *, flip: bool, num_ops: int = spec.DEFAULT_ROUNDS
) -> jax.Array:
    """Weak, then RandAugment, then Cutout, on one ``[H, W, C]`` image (FixMatch's strong)."""
    weak_key, augment_key, cutout_key = jax.random.split(key, 3)
    image = rand_augment(weak(image, weak_key, flip=flip), augment_key, num_ops=num_ops)
    return cutout(image, cutout_uniforms(cutout_key))


# --- Keys and views --------------------------------------------------------------


def example_keys(seed: int, stream: int, shard: jax.Array, position: jax.Array) -> jax.Array:
    """One key per example, from (seed, stream, data shard, stream position) alone."""
    base = jax.random.fold_in(jax.random.key(seed), stream)
    return jax.vmap(lambda s, p: jax.random.fold_in(jax.random.fold_in(base, s), p))(
        shard, position
    )


def stream_views(
    images: jax.Array,
    keys: jax.Array,
    views: tuple[str, ...],
    *,
    flip: bool,
    num_ops: int = spec.DEFAULT_ROUNDS,
) -> list[jax.Array]:
    """``len(views)`` views ("weak" or "strong") of a uint8 ``[N, H, W, C]`` batch, in [-1, 1].

    Each stream's views are made from its own batch, never concatenated with
    the other stream's: a concatenation along the sharded batch axis would move
    images between devices.
    """
    images = images.astype(jnp.float32)
    out = []
    for index, view in enumerate(views):
        view_keys = jax.vmap(lambda key, index=index: jax.random.fold_in(key, index))(keys)
        if view == "strong":
            make = functools.partial(strong, flip=flip, num_ops=num_ops)
        else:
            make = functools.partial(weak, flip=flip)
        out.append(jax.vmap(make)(images, view_keys) / 127.5 - 1.0)
    return out


def views(
    batch: dict[str, jax.Array],
    *,
    seed: int,
    unlabeled_views: str,
    labeled_views: int,
    flip: bool,
    num_ops: int = spec.DEFAULT_ROUNDS,
) -> dict[str, jax.Array]:
    """The training batch the host would have yielded, from the host's uint8 images.

    ``batch`` holds "labeled_image", "labeled_shard", "labeled_position" (and
    the same for "unlabeled_*" when ``unlabeled_views`` is not "none") beside
    the labels and indices, which pass through unchanged. ``num_ops``: the
    strong views' RandAugment rounds (``data.rand_augment_ops``).
    """
    out = {
        key: value
        for key, value in batch.items()
        if not key.endswith(("_image", "_shard", "_position"))
    }
    make = functools.partial(stream_views, flip=flip, num_ops=num_ops)
    keys = example_keys(seed, LABELED, batch["labeled_shard"], batch["labeled_position"])
    labeled = make(batch["labeled_image"], keys, ("weak", "strong")[:labeled_views])
    out["labeled"] = labeled[0]
    if labeled_views == 2:
        out["labeled_strong"] = labeled[1]
    if unlabeled_views != "none":
        keys = example_keys(seed, UNLABELED, batch["unlabeled_shard"], batch["unlabeled_position"])
        kinds = input_pipeline.UNLABELED_VIEWS[unlabeled_views]
        made = make(batch["unlabeled_image"], keys, kinds)
        out.update(zip(input_pipeline.UNLABELED_KEYS[: len(made)], made, strict=True))
    return out
