"""The batch statistics stay global under data parallelism on 8 CPU devices.

conftest.py gives every test process 8 simulated CPU devices. The joint
distribution of the MI term must be computed over the global batch, so the
sharded value and gradient must equal the single-device ones.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from muscle_jax import losses

NUM_DEVICES = 8


@pytest.fixture(scope="module", params=[jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit])
def mesh(request):
    """A data-parallel mesh in both sharding modes: the losses must work in each."""
    if jax.device_count() < NUM_DEVICES:
        pytest.skip(f"needs {NUM_DEVICES} devices, have {jax.device_count()}")
    mesh = jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(request.param,))
    with jax.set_mesh(mesh):
        yield mesh


def batch_inputs(num_classes=6):
    keys = jax.random.split(jax.random.key(0), 3)
    return {
        "labeled": jax.random.normal(keys[0], (16, num_classes)),
        "labels": (jnp.arange(16) % num_classes).astype(jnp.float32),
        "view_a": 3 * jax.random.normal(keys[1], (64, num_classes)),
        "view_b": 3 * jax.random.normal(keys[2], (64, num_classes)),
    }


def objective(inputs, consistency="fixmatch"):
    return losses.muscle_loss(
        inputs["labeled"],
        inputs["labels"].astype(jnp.int32),
        inputs["view_a"],
        inputs["view_b"],
        consistency=consistency,
        threshold=0.7,
    )


def shard(tree, mesh):
    return jax.device_put(tree, NamedSharding(mesh, P("data")))


def test_mutual_information_sharded_equals_single_device(mesh):
    inputs = batch_inputs()
    probs_a, probs_b = jax.nn.softmax(inputs["view_a"]), jax.nn.softmax(inputs["view_b"])
    single = jax.jit(losses.mutual_information)(probs_a, probs_b)
    sharded_a, sharded_b = shard((probs_a, probs_b), mesh)
    assert len(sharded_a.sharding.device_set) == NUM_DEVICES
    sharded = jax.jit(losses.mutual_information)(sharded_a, sharded_b)
    np.testing.assert_allclose(sharded, single, rtol=1e-5)
    # And not the average of per-device values, which is what a naive
    # per-device computation would give.
    per_device = np.mean(
        [
            losses.mutual_information(a, b)
            for a, b in zip(jnp.split(probs_a, NUM_DEVICES), jnp.split(probs_b, NUM_DEVICES))
        ]
    )
    assert abs(float(per_device) - float(single)) > 1e-3


def test_mutual_information_gradient_sharded_equals_single_device(mesh):
    inputs = batch_inputs()

    def loss(view_a, view_b):
        return losses.mutual_information_loss(jax.nn.softmax(view_a), jax.nn.softmax(view_b))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    single = grad(inputs["view_a"], inputs["view_b"])
    sharded = grad(*shard((inputs["view_a"], inputs["view_b"]), mesh))
    for s, t in zip(sharded, single):
        np.testing.assert_allclose(s, t, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("consistency", ["fixmatch", "mse", "none"])
def test_muscle_loss_and_gradient_sharded_equal_single_device(mesh, consistency):
    inputs = batch_inputs()
    value_and_grad = jax.jit(
        jax.value_and_grad(functools.partial(objective, consistency=consistency), has_aux=True)
    )
    (single_total, single_aux), single_grads = value_and_grad(inputs)
    (total, aux), grads = value_and_grad(shard(inputs, mesh))
    np.testing.assert_allclose(total, single_total, rtol=1e-5)
    for key in single_aux:
        np.testing.assert_allclose(aux[key], single_aux[key], rtol=1e-5, atol=1e-7)
    for name in ("labeled", "view_a", "view_b"):
        np.testing.assert_allclose(grads[name], single_grads[name], rtol=1e-4, atol=1e-7)


def test_axis_name_inside_shard_map_equals_single_device(mesh):
    inputs = batch_inputs()
    _, single_aux = jax.jit(objective)(inputs)

    def per_device(inputs):
        _, aux = losses.muscle_loss(
            inputs["labeled"],
            inputs["labels"].astype(jnp.int32),
            inputs["view_a"],
            inputs["view_b"],
            threshold=0.7,
            axis_name="data",
        )
        return aux

    mapped = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("data"), out_specs=P()))
    aux = mapped(shard(inputs, mesh))
    for key in single_aux:
        np.testing.assert_allclose(aux[key], single_aux[key], rtol=1e-5, atol=1e-7)
