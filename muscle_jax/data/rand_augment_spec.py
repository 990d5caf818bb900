"""What the strong augmentation is: the reference RandAugment's ops, ranges and Cutout.

The one place that defines FixMatch's strong augmentation as the code behind
the published numbers has it (USB 0.3.2's and TorchSSL's ``randaugment.py``,
PIL's image ops). The host (`muscle_jax.data.augment`, TensorFlow ops in
tf.data) and the device (`muscle_jax.data.device_augment`, JAX ops in the
train step) both implement exactly these ops with PIL's semantics and ask
this module for the list, the ranges and the draw layout.

A strong view is: the weak view, then ``num_ops`` rounds, each drawing one of
the 14 ops uniformly (with replacement) and a magnitude uniform in that op's
range, then Cutout: a square of side ``U(0, 0.5) x`` the image width, with a
uniform corner point as the reference computes it (below), filled with
`CUTOUT_FILL`.

Magnitudes are drawn as ``u ~ U[0, 1)`` and mapped to ``low + (high - low) * u``
by `magnitude`, so each implementation only draws uniforms.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Op:
    """One RandAugment op: its name and the range its magnitude is drawn from."""

    name: str
    low: float
    high: float


# The reference's `augment_list()` (USB 0.3.2 / TorchSSL), in its order. The
# order fixes which index a draw picks, so it is part of the draw layout.
OPS: tuple[Op, ...] = (
    Op("autocontrast", 0.0, 1.0),  # PIL ImageOps.autocontrast; magnitude unused.
    Op("brightness", 0.05, 0.95),  # ImageEnhance.Brightness(v): blend with black.
    Op("color", 0.05, 0.95),  # ImageEnhance.Color(v): blend with the luma image.
    Op("contrast", 0.05, 0.95),  # ImageEnhance.Contrast(v): blend with the mean grey.
    Op("equalize", 0.0, 1.0),  # ImageOps.equalize; magnitude unused.
    Op("identity", 0.0, 1.0),  # The image unchanged.
    Op("posterize", 4.0, 8.0),  # ImageOps.posterize(int(v)) bits: 4-7 (8 only at v = 8).
    Op("rotate", -30.0, 30.0),  # Image.rotate(v) degrees, nearest, black fill.
    Op("sharpness", 0.05, 0.95),  # ImageEnhance.Sharpness(v): blend with SMOOTH.
    Op("shear_x", -0.3, 0.3),  # AFFINE (1, v, 0, 0, 1, 0), nearest, black fill.
    Op("shear_y", -0.3, 0.3),  # AFFINE (1, 0, 0, v, 1, 0).
    Op("solarize", 0.0, 256.0),  # ImageOps.solarize(threshold=v).
    Op("translate_x", -0.3, 0.3),  # AFFINE (1, 0, v * width, 0, 1, 0).
    Op("translate_y", -0.3, 0.3),  # AFFINE (1, 0, 0, 0, 1, v * height).
)
OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)
NUM_OPS = len(OPS)

# Ops a view applies: USB's and TorchSSL's strong transform is RandAugment(3, 5)
# (the code behind the modern bases' tables); the FixMatch paper's own
# RandAugment variant used 2. `data.rand_augment_ops` overrides it.
DEFAULT_ROUNDS = 3

# Cutout after the ops: side = U(0, CUTOUT_MAX_FRACTION) x width (the reference
# scales by img.size[0], the width, for both sides).
CUTOUT_MAX_FRACTION = 0.5
# The reference's fill colour (RGB). A grey image gets its ITU-R 601 luma, as
# PIL's own conversion of that colour to mode "L" would; other channel counts
# get the colour's channel mean.
CUTOUT_FILL = (125, 123, 114)


def implementations(namespace: dict) -> dict:
    """``{op name: namespace[op name]}`` in the spec's order: each implementation
    names its op functions after `OP_NAMES`, so a drawn index means the same op
    on the host and the device, and a missing op fails at import."""
    return {name: namespace[name] for name in OP_NAMES}


def cutout_fill(channels: int) -> tuple[int, ...]:
    """`CUTOUT_FILL` for an image of ``channels`` channels."""
    if channels == 3:
        return CUTOUT_FILL
    if channels == 1:
        r, g, b = CUTOUT_FILL
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16,)
    return (round(sum(CUTOUT_FILL) / 3),) * channels


def magnitude(op: Op, uniform):
    """``low + (high - low) * uniform``: works on Python floats and on TF/JAX arrays."""
    return op.low + (op.high - op.low) * uniform


def cutout_box(width: int, height: int, side, x_uniform, y_uniform):
    """The reference's Cutout rectangle ``(x0, y0, x1, y1)``, corners inclusive, as floats.

    USB's ``CutoutAbs``: ``x0 = U(0, w)``, ``y0 = U(0, h)``; then the corner is
    moved back by half the side and clipped, and the far corner is the moved
    corner plus the side, clipped: ``x0 = int(max(0, x0 - v / 2))``,
    ``x1 = int(min(w, x0 + v))``. PIL's ``ImageDraw.rectangle`` fills both
    corners inclusive. Callers truncate with their own integer casts; here the
    arithmetic is shown on plain floats for the oracle and the docs.
    """
    x0 = int(max(0.0, x_uniform * width - side / 2.0))
    y0 = int(max(0.0, y_uniform * height - side / 2.0))
    x1 = int(min(width, x0 + side))
    y1 = int(min(height, y0 + side))
    return x0, y0, x1, y1
