"""What the benchmarks share: synthetic datasets, configs of the measured steps, timing.

Every benchmark prints ratios of rates measured in one process, in
alternating rounds (A, B, A, B, ...), so that a slower or busier moment of a
shared machine falls on both sides of a ratio instead of one.
"""

import dataclasses
import importlib.util
import os
import statistics
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from muscle_jax import config_defaults, input_pipeline, train
from muscle_jax.data import graph

graph.skip_graph_optimizer()  # TensorFlow as `muscle_jax.main` sets it up.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (model, image side, channels, labeled batch B, mu): the step sizes we
# compare with the PyTorch peers on a 2-core CPU (B * (1 + 2 mu) images a step).
# The protocol's batch is B = 64: `--batch_scale=8` for the WRNs (device_check.sh).
# A model is a registered name with its default arguments, or "config:NAME" for
# the model section of configs/NAME.py (the mnist config's six-layer small CNN).
WORKLOADS = {
    "wrn28_2": ("wrn28_2", 32, 3, 8, 7),
    "wrn28_8": ("wrn28_8", 32, 3, 8, 7),
    "small_cnn": ("small_cnn", 28, 1, 64, 7),
    "mnist_cnn": ("config:mnist", 28, 1, 64, 7),
}


def load_config(name: str):
    """``configs/NAME.py``'s default config."""
    path = os.path.join(ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def model_section(model: str) -> tuple[str, dict]:
    """(model name, its keyword arguments) of a workload's model (`WORKLOADS`)."""
    if not model.startswith("config:"):
        return model, {}
    section = load_config(model.removeprefix("config:")).model
    return section.name, section.kwargs.to_dict()


def synthetic_dataset(
    side: int, channels: int, *, num_train: int = 2_000, num_test: int = 200, num_classes: int = 10
) -> input_pipeline.ArrayDataset:
    """Random uint8 images in memory (for steps fed one fixed batch, the content is irrelevant)."""
    rng = np.random.default_rng(0)
    return input_pipeline.ArrayDataset(
        name=f"synthetic_{side}x{side}x{channels}",
        train_images=rng.integers(0, 256, (num_train, side, side, channels), dtype=np.uint8),
        train_labels=(np.arange(num_train) % num_classes).astype(np.int32),
        test_images=rng.integers(0, 256, (num_test, side, side, channels), dtype=np.uint8),
        test_labels=(np.arange(num_test) % num_classes).astype(np.int32),
        num_classes=num_classes,
    )


def step_config(
    model: str,
    *,
    batch_size: int,
    mu: int,
    method: str = "fixmatch",
    mi: bool = True,
    compute_dtype: str = "float32",
):
    """The trainer's config for one step of ``method`` (``mi``: the MUSCLE term on)."""
    config = config_defaults.base_config()
    config.data.name = "synthetic"
    config.model.name, kwargs = model_section(model)
    config.model.kwargs.update(kwargs)
    config.data.batch_size = batch_size
    config.data.unlabeled_ratio = mu
    config.data.num_labeled = 200
    config.total_steps = 10_000
    config.model.compute_dtype = compute_dtype
    # The step on views the host made, on every platform ("auto" would put the
    # augmentation in the step on an accelerator): device_augment_cost.py sets "device".
    config.data.augment_on = "host"
    config_defaults.apply_method(config, method, use_mi=mi)
    return config


@dataclasses.dataclass
class CompiledStep:
    """A jitted step bound to its state and one batch already on the device."""

    name: str
    images_per_step: int
    step: Callable
    state: object
    batch: dict
    compile_seconds: float
    flops_per_step: float | None

    def run(self, steps: int) -> list[float]:
        """Seconds of each of ``steps`` steps, waiting for the device after each."""
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.state, out = self.step(self.state, self.batch)
            jax.block_until_ready(out)
            times.append(time.perf_counter() - start)
        return times


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # Older jax returned one dict per computation.
        cost = cost[0]
    return float(cost["flops"]) if cost and "flops" in cost else None


def _compile(name, function, state, batch, images) -> CompiledStep:
    start = time.perf_counter()
    compiled = function.lower(state, batch).compile()
    state, out = compiled(state, batch)
    jax.block_until_ready(out)
    return CompiledStep(
        name=name,
        images_per_step=images,
        step=compiled,
        state=state,
        batch=batch,
        compile_seconds=time.perf_counter() - start,
        flops_per_step=_flops(compiled),
    )


def trainer_step(name: str, config, dataset) -> CompiledStep:
    """The trainer's own jitted train step (EMA and metrics included) for ``config``.

    With ``data.augment_on="device"`` the batch is the host's uint8 images and
    the step makes the views first, as in a run.
    """
    source = input_pipeline.sources.open_source(dataset, data_dir=config.data.data_dir)
    graphdef, state, tx = train.create_train_state(config, source.info)
    mesh = train.make_mesh()
    batch = next(train.make_train_batches(config, source=source))
    batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
    state = jax.device_put(state, NamedSharding(mesh, P()))
    augment = train.device_augmentation(config, source)
    p_train, _ = train.compile_steps(graphdef, tx, config, mesh, augment=augment)
    return _compile(name, p_train, state, batch, train.images_per_step(config))


def bare_supervised_step(name: str, config, dataset, num_images: int) -> CompiledStep:
    """Forward, cross-entropy, backward and the optimiser on ``num_images`` labeled images.

    The same backbone and optimiser as ``config``, and nothing else: no EMA,
    no extra metrics, no second view. What every trainer pays at least.
    """
    info = input_pipeline.dataset_info(dataset)
    graphdef, state, tx = train.create_train_state(config, info)
    images = jnp.asarray(
        np.random.default_rng(0).uniform(-1, 1, (num_images, *info.image_shape)), jnp.float32
    )
    labels = jnp.arange(num_images) % info.num_classes
    bare_state = (state.params, state.batch_stats, state.opt_state)

    @jax.jit
    def step(bare_state, batch):
        params, batch_stats, opt_state = bare_state

        def loss_fn(params):
            model = nnx.merge(graphdef, params, batch_stats)
            logits = model(batch["images"], train=True).logits
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
            return loss.mean(), nnx.state(model, nnx.BatchStat).to_pure_dict()

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_stats, opt_state), loss

    return _compile(name, step, bare_state, {"images": images, "labels": labels}, num_images)


def alternate(
    contenders: Sequence, *, rounds: int, steps: int, settle_seconds: float = 0.5
) -> dict[str, list[float]]:
    """Step times of each contender, run ``steps`` steps at a time in ``rounds`` rounds.

    A contender is anything with ``name`` and ``run(steps) -> [seconds]``.
    Between contenders the machine idles for ``settle_seconds``: thread pools
    (PyTorch's OpenMP threads above all) keep spinning for a while after their
    last parallel region, and would otherwise slow whichever contender runs
    next (see benchmarks/README.md, "Measuring fairly").
    """
    times = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for contender in contenders:
            time.sleep(settle_seconds)
            times[contender.name] += contender.run(steps)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """``median (min-max)`` in milliseconds, for the tables."""
    return f"{median(values) * 1e3:,.0f} ms ({min(values) * 1e3:,.0f}-{max(values) * 1e3:,.0f})"


def device_line() -> str:
    device = jax.devices()[0]
    return (
        f"jax {jax.__version__}, {jax.device_count()} x {device.platform} "
        f"({device.device_kind}), {os.cpu_count()} CPU cores"
    )
