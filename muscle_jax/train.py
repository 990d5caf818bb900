"""MUSCLE training: train state, the jitted train and eval steps, and the loop.

The pieces are small pure functions that tests use one by one:
`create_train_state`, `train_step`, `eval_step`, `compile_steps`; the loop
`train_and_evaluate` wires them to the input pipeline, the checkpointer and
the metric writer.

Parallelism is global-view `jax.jit` over a ``("data",)`` mesh: batches are
sharded over the data axis, the state is replicated and donated, and XLA
inserts the cross-device reductions (the MI joint included). The same code
runs on one CPU device, N simulated ones, a GPU or a TPU slice.
"""

import contextlib
import functools
import itertools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from muscle_jax import (
    checkpointing,
    config_validation,
    diagnostics,
    evaluation,
    input_pipeline,
    loop,
    memory_plan,
    methods,
    models,
    monitoring,
    objective,
    optim,
    provenance,
    run_plan,
)
from muscle_jax import (
    workdir as workdir_lib,
)
from muscle_jax.data import device, device_augment, splits
from muscle_jax.data import plan as data_plan

COMPUTE_DTYPES = config_validation.COMPUTE_DTYPES


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree that Orbax saves whole.

    There is no RNG state: step ``k`` uses ``fold_in(key(seed), k)``, so a
    resumed run draws exactly the numbers an uninterrupted one would.
    ``method_state`` is what the loss terms carry across steps
    (`methods.init_state`: e.g. self-adaptive training's soft targets), saved
    and restored with the rest.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any
    method_state: Any = flax.struct.field(default_factory=dict)


# ---------------------------------------------------------------- building


def build_model(config: ml_collections.ConfigDict, info: input_pipeline.DatasetInfo):
    """The ``model`` section's network, with the heads the loss terms need."""
    model_config = config.model
    kwargs = dict(model_config.kwargs)
    if model_config.name == "mlp":
        kwargs.setdefault("input_shape", tuple(info.image_shape))
    else:
        kwargs.setdefault("in_channels", info.image_shape[-1])
    return models.create_model(
        model_config.name,
        num_classes=config.data.num_classes,
        # "rbg" compiles several times faster than threefry on CPU; initialisation
        # stays a deterministic function of the seed.
        rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")),
        overclustering_heads=model_config.overclustering_heads,
        overclustering_factor=model_config.overclustering_factor,
        dtype=COMPUTE_DTYPES[model_config.compute_dtype],
        **methods.model_heads(config.loss),
        **kwargs,
    )


def state_spec(
    config: ml_collections.ConfigDict,
    info: input_pipeline.DatasetInfo,
    train_labels: np.ndarray | None = None,
    *,
    split_plan: "data_plan.SplitPlan | None" = None,
):
    """What the loss terms size their state by.

    The labeled set's count of each class is the run's split plan's when
    given (`plan_run` passes it). Without it, the config's counts; with
    ``data.num_labeled=0`` every training example is labeled, so the counts
    are the data's: pass ``train_labels`` (the source's `train_labels`).
    """
    if split_plan is not None:
        counts = split_plan.labeled_class_counts()
    elif config.data.num_labeled != splits.ALL_LABELED:
        counts = splits.per_class_counts(
            config.data.num_labeled,
            config.data.num_classes,
            imbalance_ratio=config.data.imbalance_ratio,
        )
    elif train_labels is None:
        raise ValueError(
            "data.num_labeled=0 labels every training example: pass the training labels "
            "(state_spec(config, info, source.train_labels())) for the count of each class."
        )
    else:
        counts = data_plan.draw(
            train_labels,
            dataset=info.name,
            num_classes=config.data.num_classes,
            seed=config.seed,
            num_labeled=splits.ALL_LABELED,
            num_validation=config.data.num_validation,
        ).labeled_class_counts()
    return methods.StateSpec(
        num_train=info.num_train,
        num_classes=config.data.num_classes,
        num_unlabeled=info.pool_size,
        labeled_class_counts=tuple(int(count) for count in counts),
    )


def create_train_state(
    config: ml_collections.ConfigDict,
    info: input_pipeline.DatasetInfo,
    spec: methods.StateSpec | None = None,
) -> tuple[nnx.GraphDef, TrainState, optax.GradientTransformation]:
    """Initialises the model from ``config.seed``; returns (graphdef, state, optimiser).

    ``spec``: `state_spec`'s result (default: computed from ``config`` and ``info``).
    """

    def initial_variables():
        _, params, batch_stats = nnx.split(build_model(config, info), nnx.Param, nnx.BatchStat)
        return params.to_pure_dict(), batch_stats.to_pure_dict()

    abstract_model = nnx.eval_shape(lambda: build_model(config, info))
    if models.is_import_path(config.model.name):  # A backbone of yours: its contract first.
        models.user.check_contract(abstract_model, info.image_shape, config.model.name)
    graphdef = nnx.graphdef(abstract_model)
    # One compiled initialiser: run eagerly, every kernel's random init compiles on its own.
    params, batch_stats = jax.jit(initial_variables)()
    tx = optim.make_optimizer(config)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        # Copies: the state is donated to the step, and one buffer cannot be donated twice.
        ema_params=jax.tree.map(jnp.copy, params),
        ema_batch_stats=jax.tree.map(jnp.copy, batch_stats),
        method_state=methods.init_state(
            config.loss, state_spec(config, info) if spec is None else spec
        ),
    )
    return graphdef, state, tx


def state_sharding(config, info, mesh, spec: methods.StateSpec | None = None) -> TrainState:
    """Where each part of the state lives: replicated, except method state a term shards."""
    replicated = NamedSharding(mesh, P())
    spec = state_spec(config, info) if spec is None else spec
    partitions = methods.state_partition(config.loss, spec, mesh.size)
    return TrainState(
        step=replicated,
        params=replicated,
        batch_stats=replicated,
        opt_state=replicated,
        ema_params=replicated,
        ema_batch_stats=replicated,
        method_state=jax.tree.map(
            lambda spec: NamedSharding(mesh, spec),
            partitions,
            is_leaf=lambda leaf: isinstance(leaf, P),
        ),
    )


def compatibility(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What a checkpoint must share with this config to be restored into it."""
    return {
        "model_name": config.model.name,
        "model_kwargs": json.loads(json.dumps(config.model.kwargs.to_dict())),
        "num_classes": config.data.num_classes,
        "overclustering_heads": config.model.overclustering_heads,
        "overclustering_factor": config.model.overclustering_factor,
        "heads": methods.model_heads(config.loss),
        "optimizer": config.optimizer.name,
        checkpointing.LAYOUT_KEY: models.PARAMETER_LAYOUT,
    }


# ---------------------------------------------------------------- steps


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    augment: Callable[[dict[str, jax.Array]], dict[str, jax.Array]] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on the configured objective; pure, so it can be jitted and donated.

    ``augment`` makes the training views from the host's uint8 images first
    (`device_augmentation`), inside the same jitted program.
    """
    if augment is not None:
        batch = augment(batch)
    key = jax.random.fold_in(jax.random.key(config.seed), state.step)
    teacher = None
    if methods.needs_teacher(config.loss):
        teacher = nnx.merge(graphdef, state.ema_params, state.ema_batch_stats)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, state.batch_stats)
        loss, (aux, method_state) = objective.compute_loss(
            model,
            batch,
            step=state.step,
            key=key,
            loss_config=config.loss,
            num_classes=config.data.num_classes,
            total_steps=config.total_steps,
            method_state=state.method_state,
            teacher=teacher,
            dtype=COMPUTE_DTYPES[config.model.compute_dtype],
        )
        batch_stats = nnx.state(model, nnx.BatchStat).to_pure_dict()
        return loss, (aux, batch_stats, method_state)

    (_, (aux, batch_stats, method_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = config.ema_decay

    def ema(old, new):
        return jax.tree.map(lambda o, n: decay * o + (1.0 - decay) * n, old, new)

    new_state = TrainState(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=ema(state.ema_params, params),
        ema_batch_stats=ema(state.ema_batch_stats, batch_stats),
        method_state=method_state,
    )
    metrics = dict(aux)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["learning_rate"] = optim.learning_rate_schedule(config)(state.step)
    return new_state, metrics


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    graphdef: nnx.GraphDef,
    num_classes: int,
    head: str = methods.DEFAULT_EVALUATION_HEAD,
) -> dict[str, jax.Array]:
    """Per-class hits and predicted-class counts of the EMA and raw models on one eval batch.

    ``head`` is the output that predicts (`methods.evaluation_head`). The
    confusion counts are the EMA model's only: it is the reported model.
    """
    ema_model = nnx.merge(graphdef, state.ema_params, state.ema_batch_stats)
    raw_model = nnx.merge(graphdef, state.params, state.batch_stats)
    ema_hits = evaluation.per_class_hits(ema_model, batch, num_classes, head)
    raw_hits = evaluation.per_class_hits(raw_model, batch, num_classes, head)
    return {
        "ema_correct": ema_hits["correct"],
        "raw_correct": raw_hits["correct"],
        "count": ema_hits["count"],
        "ema_confusion": ema_hits["confusion"],
        "ema_predicted": ema_hits["predicted"],
        "raw_predicted": raw_hits["predicted"],
    }


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D ``("data",)`` mesh over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def device_augmentation(config: ml_collections.ConfigDict, source) -> Callable | None:
    """The train step's augmentation for ``data.augment_on="device"`` (resolved), else None."""
    if device.augment_place(config.data) != "device":
        return None
    return functools.partial(
        device_augment.views,
        seed=config.seed,
        unlabeled_views=methods.unlabeled_views(config),
        labeled_views=methods.labeled_views(config),
        flip=input_pipeline.flips(config.data, source),
        num_ops=config.data.rand_augment_ops,
    )


def compile_steps(graphdef, tx, config, mesh, state_shardings=None, augment=None):
    """The jitted train and eval steps for ``mesh``: data sharded, state donated.

    ``state_shardings`` is `state_sharding`'s tree; None replicates the whole
    state (right for every method without sharded state). ``augment``:
    `device_augmentation`'s function, run at the start of the train step.
    """
    data = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    state_shardings = replicated if state_shardings is None else state_shardings
    jitted_train = jax.jit(
        functools.partial(train_step, graphdef=graphdef, tx=tx, config=config, augment=augment),
        in_shardings=(state_shardings, data),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )
    jitted_eval = jax.jit(
        functools.partial(
            eval_step,
            graphdef=graphdef,
            num_classes=config.data.num_classes,
            head=methods.evaluation_head(config.loss),
        ),
        in_shardings=(state_shardings, data),
        out_shardings=replicated,
    )
    return jitted_train, jitted_eval


# ---------------------------------------------------------------- the loop


def make_train_batches(
    config, *, source=None, sharding=None, start_step: int = 0, plan: run_plan.RunPlan | None = None
):
    """The input pipeline's training stream, with the views the loss terms need.

    ``source`` overrides the dataset the ``data`` section names (an opened
    source or an in-memory `input_pipeline.ArrayDataset`); ``plan`` is the
    run's (`plan_run`), whose split plan and views the stream then uses.
    """
    return input_pipeline.training(
        config.data,
        seed=config.seed,
        unlabeled_views=methods.unlabeled_views(config) if plan is None else plan.unlabeled_views,
        labeled_views=methods.labeled_views(config) if plan is None else plan.labeled_views,
        source=source,
        sharding=sharding,
        start_step=start_step,
        split_plan=None if plan is None else plan.splits,
    )


def images_per_step(config: ml_collections.ConfigDict) -> int:
    """Images the step's forward pass sees: every labeled and unlabeled view."""
    data = config.data
    labeled = data.batch_size * methods.labeled_views(config)
    views = len(input_pipeline.UNLABELED_VIEWS[methods.unlabeled_views(config)])
    return labeled + views * data.batch_size * data.unlabeled_ratio


def _restore_or_initialise(config, state, checkpointer, spec):
    """Resumes from the workdir's latest checkpoint, else fine-tunes from ``init_from``.

    Returns the state and the run's `loop.Record` (the resumed one, or an empty one).
    """
    record = loop.Record.empty(validation=bool(config.data.num_validation))
    expected = compatibility(config)
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore_newest_readable(state, expected=expected)
        changes = config_validation.check_resume(
            meta.get("config"), config, where=checkpointer.directory
        )
        logging.info("Resumed from %s at step %d.", checkpointer.directory, int(state.step))
        if changes:
            logging.warning("Resumed with config changes: %s.", "; ".join(changes))
        return state, loop.Record.resumed(meta)
    unreadable = checkpointer.moved_aside()
    if unreadable:
        logging.warning(
            "Starting over from step 0: this workdir's earlier checkpoints could not be read "
            "and were moved to %s (%d of them, e.g. %s).",
            os.path.dirname(unreadable[0]),
            len(unreadable),
            os.path.basename(unreadable[-1]),
        )
    if config.init_from:
        source = checkpointing.Checkpointer(config.init_from, max_to_keep=1, read_only=True)
        # The source's state tree has its own methods' state, which is not carried over.
        replicated = jax.tree.leaves(state)[0].sharding
        template = state.replace(
            method_state=jax.tree.map(
                lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
                _saved_method_state(source, config, spec),
            )
        )
        restored, _ = source.restore(template, step=config.init_from_step, expected=expected)
        # Fine-tuning keeps the weights and restarts everything else.
        state = state.replace(
            params=restored.params,
            batch_stats=restored.batch_stats,
            ema_params=jax.tree.map(jnp.copy, restored.params),
            ema_batch_stats=jax.tree.map(jnp.copy, restored.batch_stats),
        )
        logging.info("Initialised the weights from %s.", source.directory)
    return state, record


def _saved_method_state(source, config, spec):
    """An abstract `methods.init_state` tree of the run that wrote ``source``'s checkpoint."""
    if source.latest_step() is None:
        return {}
    step = source.latest_step() if config.init_from_step is None else config.init_from_step
    saved_loss = source.restore_meta(step).get("config", {}).get("loss", {})
    if not methods.names_its_terms(saved_loss):
        return {}  # Written before the loss had named terms: no method state.
    return jax.eval_shape(lambda: methods.init_state(ml_collections.ConfigDict(saved_loss), spec))


def _describe_sample(sample, num_classes: int) -> dict[str, Any]:
    """results.json's ``unlabeled_sample``: its size and the true classes of its images."""
    labels = sample[1]
    return {
        "size": len(labels),
        "true_per_class": np.bincount(labels, minlength=num_classes).astype(int).tolist(),
    }


def _metric_writer(workdir: str) -> metric_writers.MetricWriter:
    """TensorBoard summaries from the first process; the progress line is logged separately."""
    if jax.process_index() > 0:
        return metric_writers.MultiWriter([])
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    source: "input_pipeline.ArrayDataset | None" = None,
) -> dict[str, Any]:
    """Trains and evaluates ``config`` in ``workdir``, resuming from it when it has checkpoints.

    The data is ``source`` when given (an `input_pipeline.ArrayDataset` of
    your arrays, in memory; ``data.name`` and ``data.path`` are then not
    read), else the config's ``data.path`` or ``data.name``. Returns the
    results written to ``WORKDIR/results.json``, or, when a SIGTERM/SIGINT
    stopped the run early, ``{"status": "preempted", "step": k}`` after saving
    a checkpoint at step k.
    """
    started = time.perf_counter()
    started_at = provenance.now()
    config = config_validation.with_data_shards(config, jax.process_count())
    config = config_validation.with_augment_place(config, jax.default_backend())
    # Everything that can be wrong with the inputs is checked before compiling,
    # and before anything is created in the workdir.
    config_validation.validate_config(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    # Opened once: training and every evaluation read from it.
    if source is None:
        source = input_pipeline.open_dataset(
            config.data, cache_dir=os.path.join(workdir, "data_cache")
        )
    else:
        source = input_pipeline.sources.open_source(source)
    info = source.info
    config = config_validation.with_dataset_facts(config, info)
    config_validation.validate_against_dataset(config, info)
    # The run's split plan, drawn once here (a class with too few examples is
    # refused before the workdir is touched) and read by everything after.
    split_plan = data_plan.for_data_config(config.data, source=source, seed=config.seed)
    # A finished run asked again is answered from its results; a workdir this config
    # cannot resume is refused: both before anything is written (a rerun writes nothing).
    finished = _check_before_writing(config, workdir, info)
    if finished is not None:
        return finished
    # What the workdir holds before the run first writes to it: a run refused
    # after that (`_REFUSED_IN_THE_WORKDIR`) puts it back as it was.
    before = workdir_lib.snapshot(workdir)
    _wait_for_every_process("workdir checked before writing")
    workdir = workdir_lib.prepare(workdir)
    # One run per workdir; the first process holds the lock and writes the log.
    first = jax.process_index() == 0
    accepted = False

    def accept() -> None:
        nonlocal accepted
        accepted = True
        source.accept()  # What opening the data held back (an image folder's cache).

    try:
        with workdir_lib.lock(workdir) if first else contextlib.nullcontext():
            with workdir_lib.console_log(workdir) if first else contextlib.nullcontext():
                results = _train(config, workdir, source, split_plan, started, accept)
    except _REFUSED_IN_THE_WORKDIR:
        if first and not accepted:  # Lock released, log closed: nothing of it is left.
            workdir_lib.restore(before)
        raise
    if results["status"] == "completed":
        results["run"] = provenance.describe(
            started_at=started_at, wall_seconds=time.perf_counter() - started
        )
        if jax.process_index() == 0:
            workdir_lib.write_json(os.path.join(workdir, "results.json"), results)
            loop.write_report(
                workdir, config, results["history"], results["train_history"], results
            )
    return results


def _wait_for_every_process(point: str) -> None:
    """A barrier across processes (none in a single-process run).

    Every process reads the workdir before the first one writes to it: a process
    still reading while another has made ``checkpoints/`` would take another path
    (a checkpoint reader's collective against the writer's) and the run would
    end in a collective mismatch.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # Deferred: single runs need none.

        multihost_utils.sync_global_devices(f"muscle_jax: {point}")


# Refusals that, raised in `_train` before its ``accept``, leave nothing of the run
# behind (`workdir.restore`). Not `workdir.WorkdirError`: a refused lock means the
# files are another run's; not `UnreadableCheckpointError`: its message says where
# the checkpoints were moved, and a rerun starts over from that.
_REFUSED_IN_THE_WORKDIR = (
    memory_plan.InsufficientMemoryError,
    config_validation.ConfigError,
    models.UserModelError,
    checkpointing.IncompatibleCheckpointError,
    input_pipeline.DataValidationError,
    input_pipeline.DataRequestError,
)


def _check_before_writing(config, workdir: str, info) -> dict[str, Any] | None:
    """What can refuse a run in a used workdir, checked before the run writes anything.

    Returns the stored results (with ``already_complete: True``) when the
    workdir holds a finished run of this same config, which a rerun would
    only repeat. Raises `models.UserModelError` for a backbone of yours that
    breaks its contract, and `checkpointing.IncompatibleCheckpointError` or
    `config_validation.ConfigError` when the latest checkpoint cannot be
    resumed with this config. `_train` checks all of it again as it builds
    and restores; an unreadable checkpoint is left to it (it moves it aside).
    """
    if models.is_import_path(config.model.name):
        abstract_model = nnx.eval_shape(lambda: build_model(config, info))
        models.user.check_contract(abstract_model, info.image_shape, config.model.name)
    finished = _finished_results(config, workdir)
    if finished is not None:
        return finished
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return None
    reader = checkpointing.Checkpointer(directory, max_to_keep=1, read_only=True)
    try:
        step = reader.latest_step()
        if step is None:
            return None
        try:
            meta = reader.restore_meta(step)
        except Exception:  # Orbax raises many types for bad bytes.
            return None
        checkpointing.check_compatible(
            meta.get("compatibility", {}), compatibility(config), where=reader.directory
        )
        config_validation.check_resume(meta.get("config"), config, where=reader.directory)
    finally:
        reader.close()
    return None


def _finished_results(config, workdir: str) -> dict[str, Any] | None:
    """``WORKDIR/results.json`` when it is a finished run of exactly ``config``, else None.

    A changed key (even one a resume may change, e.g. ``median_of_last_evals``)
    goes the usual way: resumed at its end and reported again, or refused.
    Every process reads the file: a multi-process run's workdir is on a file
    system they share, as its checkpoints need.
    """
    try:
        with open(os.path.join(workdir, "results.json")) as handle:
            results = json.load(handle)
    except (OSError, ValueError):
        return None
    if results.get("status") != "completed" or results.get("steps") != config.total_steps:
        return None
    saved = results.get("config")
    if not isinstance(saved, dict) or any(
        config_validation.resume_changes(saved, json.loads(config.to_json()))
    ):
        return None
    return {**results, "already_complete": True}


def plan_run(config: ml_collections.ConfigDict, source, split_plan=None) -> run_plan.RunPlan:
    """The `run_plan.RunPlan` of ``config`` on an opened ``source``, built once for a run."""
    if split_plan is None:
        split_plan = data_plan.for_data_config(config.data, source=source, seed=config.seed)
    info = source.info
    spec = state_spec(config, info, split_plan=split_plan)
    mesh = make_mesh()
    return run_plan.RunPlan(
        config=config,
        source=source,
        splits=split_plan,
        spec=spec,
        unlabeled_views=methods.unlabeled_views(config),
        labeled_views=methods.labeled_views(config),
        mesh=mesh,
        data_sharding=NamedSharding(mesh, P("data")),
        state_shardings=state_sharding(config, info, mesh, spec),
        images_per_step=images_per_step(config),
    )


def _train(
    config: ml_collections.ConfigDict,
    workdir: str,
    source,
    split_plan,
    started: float,
    accept: Callable[[], None] = lambda: None,
):
    """The body of `train_and_evaluate` once the inputs are valid and the workdir is held.

    ``accept`` is called once the run is accepted, just before its first step:
    a refusal before it leaves nothing behind, an error after it keeps the outputs.
    """
    logging.info(
        "JAX process %d/%d, %d local / %d global devices (%s).",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].platform,
    )
    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints
    )
    plan = plan_run(config, source, split_plan)
    ema_note = evaluation.ema_horizon_note(config.ema_decay, config.total_steps)
    if ema_note:
        logging.warning("%s", ema_note)
    graphdef, state, tx = create_train_state(config, plan.info, plan.spec)
    # Laid out over the mesh first, so a checkpoint is restored straight into
    # its shards on every process (no array crosses hosts).
    state = jax.device_put(state, plan.state_shardings)
    state, record = _restore_or_initialise(config, state, checkpointer, plan.spec)
    start_step = int(state.step)
    batches = make_train_batches(
        config, source=source, sharding=plan.data_sharding, start_step=start_step, plan=plan
    )
    p_train, p_eval = compile_steps(
        graphdef,
        tx,
        config,
        plan.mesh,
        plan.state_shardings,
        augment=device_augmentation(config, source),
    )
    try:
        memory, batches = _check_memory(plan, p_train, p_eval, state, batches, start_step)
    except memory_plan.InsufficientMemoryError:
        checkpointer.close()
        raise
    accept()
    writer = _metric_writer(workdir)
    if start_step == 0:
        writer.write_hparams({k: v for k, v in flatten(config.to_dict()).items() if v is not None})
    run = loop.Loop(
        config=config,
        state=state,
        record=record,
        p_eval=p_eval,
        source=source,
        data_sharding=plan.data_sharding,
        workdir=workdir,
        is_first_process=jax.process_index() == 0,
        # Read once: the held-out examples every evaluation also scores (None without).
        validation_set=input_pipeline.validation_examples(
            config.data, source=source, seed=config.seed, split_plan=plan.splits
        ),
        # Read once: the unlabeled images every evaluation predicts, the same at each.
        unlabeled_sample=input_pipeline.unlabeled_sample(
            config.data,
            source=source,
            seed=config.seed,
            size=loop.UNLABELED_SAMPLE_SIZE,
            split_plan=plan.splits,
        ),
    )
    summary, actions = _periodic_actions(run, writer, checkpointer, plan)
    timer = loop.StepTimer(config, start_step=start_step)
    try:
        stopped_by = loop.run(
            run,
            train_step=p_train,
            batches=batches,
            start_step=start_step,
            summary=summary,
            actions=actions,
            timer=timer,
        )
    finally:
        for action in actions:
            if isinstance(action, loop.Profile):
                action.finish()
    checkpointer.close()
    writer.flush()
    loop_done = time.perf_counter()
    final_step = int(run.state.step)
    if stopped_by is not None:
        if record.history["step"]:
            run.write_report()
        logging.warning(
            "Stopped by %s at step %d with a checkpoint; rerun the same command to resume.",
            stopped_by,
            final_step,
        )
        return {"status": "preempted", "step": final_step}
    evaluate = next(action for action in actions if isinstance(action, loop.Evaluate))
    last = evaluate.last
    if last is None or record.history["step"][-1] != final_step:
        # Resumed at the end (nothing left to train): evaluate the final state once.
        last = run.evaluate()
    timing = _timing(started, timer.first_step_done, loop_done, final_step - start_step)
    return _results(run, plan, last, ema_note, memory, timing)


def _check_memory(plan, p_train, p_eval, state, batches, start_step: int):
    """The memory plan (`memory_plan.check`), before the first step; None when nothing is left.

    Both steps are compiled here with the first real batch: the loop's calls
    reuse these executables, and a run that cannot fit stops now. Returns the
    plan and the batches (the first one put back in front).
    """
    config = plan.config
    if start_step >= config.total_steps:
        return None, batches
    first_batch = next(batches)
    batches = itertools.chain([first_batch], batches)
    eval_batch = next(
        input_pipeline.evaluation(config.data, source=plan.source, sharding=plan.data_sharding)
    )
    memory = memory_plan.check(
        config,
        train_step=p_train,
        eval_step=p_eval,
        state=state,
        train_batch=first_batch,
        eval_batch=eval_batch,
        info=plan.info,
        images_per_step=plan.images_per_step,
    )
    return memory, batches


def _periodic_actions(run: loop.Loop, writer, checkpointer, plan: run_plan.RunPlan):
    """The summary and the loop's other periodic actions, in the order they run after a step."""
    config = run.config
    total = config.total_steps
    start_step = int(run.state.step)
    progress = monitoring.ProgressLine(
        total_steps=total, images_per_step=plan.images_per_step, start_step=start_step
    )
    evaluations = {"every": (config.eval_every_steps,), "last_step": total}
    actions = [
        loop.Evaluate(run, writer, **evaluations),
        loop.WriteReport(run, **evaluations),
        loop.SaveCheckpoint(
            run,
            checkpointer,
            compatibility(config),
            every=(config.checkpoint_every_steps,),
            last_step=total,
        ),
    ]
    if config.profile_steps:
        actions.append(
            loop.Profile(
                workdir=run.workdir,
                first_step=start_step + config.profile_first_step,
                steps=config.profile_steps,
            )
        )
    # The summary runs whenever another action does, so what they write holds this step.
    summary = loop.Summary(
        run,
        writer,
        progress,
        every=(config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps),
        last_step=total,
    )
    return summary, actions


def _results(run: loop.Loop, plan, last, ema_note, memory, timing) -> dict[str, Any]:
    """results.json's content for a finished run (`train_and_evaluate` adds ``run``)."""
    config, history = run.config, run.record.history
    source = plan.source
    reported = evaluation.reported_evaluations(
        history["step"], last=config.median_of_last_evals, total_steps=config.total_steps
    )
    return {
        "status": "completed",
        "accuracy": evaluation.reported_accuracy(history["ema_accuracy"], reported),
        "raw_accuracy": evaluation.reported_accuracy(history["raw_accuracy"], reported),
        # Why the EMA figure above may mean little (its average outlasts the run), or None.
        "ema_note": ema_note,
        # Which evaluations the two figures are the median of (docs/training.md).
        "accuracy_steps": [history["step"][index] for index in reported],
        "final_accuracy": last["ema_accuracy"],
        "per_class_accuracy": last["per_class_accuracy"],
        # From the same evaluation: rows true class, columns predicted (EMA model).
        "confusion_matrix": last["confusion"],
        "classes_lost": diagnostics.classes_lost_entry(last["per_class_accuracy"]),
        "unlabeled_sample": _describe_sample(run.unlabeled_sample, config.data.num_classes),
        # The labeled set a class: data.num_labeled=0 keeps the data's own counts.
        "labeled_per_class": [int(count) for count in plan.spec.labeled_class_counts],
        # The model output that predicts: "logits", or the head a term asks for (ABC's).
        "evaluation_head": methods.evaluation_head(config.loss),
        "class_names": list(source.info.class_names or ()) or None,
        "unlabeled_pool": input_pipeline.unlabeled_pool_counts(
            config.data, source=source, seed=config.seed, split_plan=plan.splits
        ),
        # The labels training saw wrong (data.label_noise): the setting and every change.
        "label_noise": plan.splits.label_noise_record(),
        "validation": evaluation.chosen_by_validation(
            history,
            num_examples=None if run.validation_set is None else len(run.validation_set[1]),
        ),
        "num_test_examples": last["num_examples"],
        "steps": int(run.state.step),
        "timing": timing,
        # The estimate made before the first step, beside the peak the process reached.
        "memory": {
            **(memory.record() if memory is not None else {"estimates": None}),
            "measured_peak_rss_bytes": memory_plan.peak_resident_bytes(),
        },
        "history": history,
        "train_history": run.record.train_history,
        "config": json.loads(config.to_json()),
    }


def _timing(started: float, first_step_done: float | None, loop_done: float, steps: int):
    """Seconds to the first step (start-up + compilation) and of the loop after it.

    The loop's seconds include everything a run does between steps:
    evaluation, logging, checkpoints and waiting for input.
    """
    if first_step_done is None:  # Nothing left to train: a resumed, finished run.
        return {"seconds_to_first_step": None, "loop_seconds": 0.0, "loop_steps": 0}
    return {
        "seconds_to_first_step": round(first_step_done - started, 3),
        "loop_seconds": round(loop_done - first_step_done, 3),
        "loop_steps": steps - 1,
    }


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, for TensorBoard's hparams view."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
