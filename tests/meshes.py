"""The data-parallel meshes the losses' sharding tests run under (8 simulated devices).

`mesh` is for `jax.shard_map` with an ``axis_name``: each device sees its own
slice. `global_mesh` is for global-view `jax.jit` over a sharded batch, in
both sharding modes. Both are entered per test: two module-scoped
`jax.set_mesh` contexts stay entered together, so which mesh is current would
depend on the order the tests run in.
"""

import jax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

NUM_DEVICES = 8


def make_mesh(axis_type):
    if jax.device_count() < NUM_DEVICES:
        pytest.skip(f"needs {NUM_DEVICES} devices, have {jax.device_count()}")
    return jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(axis_type,))


@pytest.fixture
def mesh():
    mesh = make_mesh(jax.sharding.AxisType.Explicit)
    with jax.set_mesh(mesh):
        yield mesh


@pytest.fixture(params=[jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit])
def global_mesh(request):
    mesh = make_mesh(request.param)
    with jax.set_mesh(mesh):
        yield mesh


def shard(tree, mesh):
    return jax.device_put(tree, NamedSharding(mesh, P("data")))
