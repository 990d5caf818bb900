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
    memory_plan,
    methods,
    models,
    monitoring,
    objective,
    optim,
    preemption,
    provenance,
    report,
)
from muscle_jax import (
    workdir as workdir_lib,
)
from muscle_jax.data import device, device_augment, splits

COMPUTE_DTYPES = config_validation.COMPUTE_DTYPES
# The accuracy/loss PNG is redrawn at an evaluation at most this often.
PLOT_EVERY_SECONDS = 60.0


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
):
    """What the loss terms size their state by.

    ``train_labels`` (the source's `train_labels`) are needed with
    ``data.num_labeled=0``: every training example is then labeled, so the
    labeled set's count of each class is the data's, not the config's.
    """
    if config.data.num_labeled != splits.ALL_LABELED:
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
        held_out = splits.select_validation_indices(
            train_labels,
            num_per_class=config.data.num_validation,
            seed=config.seed,
            num_classes=config.data.num_classes,
        )
        counts = np.bincount(np.delete(train_labels, held_out), minlength=config.data.num_classes)
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


def make_train_batches(config, *, source=None, sharding=None, start_step: int = 0):
    """The input pipeline's training stream, with the views the loss terms need.

    ``source`` overrides the dataset the ``data`` section names (an opened
    source or an in-memory `input_pipeline.ArrayDataset`).
    """
    return input_pipeline.training(
        config.data,
        seed=config.seed,
        unlabeled_views=methods.unlabeled_views(config),
        labeled_views=methods.labeled_views(config),
        source=source,
        sharding=sharding,
        start_step=start_step,
    )


def images_per_step(config: ml_collections.ConfigDict) -> int:
    """Images the step's forward pass sees: every labeled and unlabeled view."""
    data = config.data
    labeled = data.batch_size * methods.labeled_views(config)
    views = len(input_pipeline.UNLABELED_VIEWS[methods.unlabeled_views(config)])
    return labeled + views * data.batch_size * data.unlabeled_ratio


def _restore_or_initialise(config, state, checkpointer, spec):
    """Resumes from the workdir's latest checkpoint, else fine-tunes from ``init_from``."""
    history = {"step": [], "ema_accuracy": [], "raw_accuracy": []}
    history.update({key: [] for key in SAMPLE_HISTORY_KEYS.values()})
    if config.data.num_validation:
        history.update(val_ema_accuracy=[], val_raw_accuracy=[])
    train_history = {"step": [], **{term: [] for term in report.LOSS_TERMS}}
    expected = compatibility(config)
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore_newest_readable(state, expected=expected)
        changes = config_validation.check_resume(
            meta.get("config"), config, where=checkpointer.directory
        )
        logging.info("Resumed from %s at step %d.", checkpointer.directory, int(state.step))
        if changes:
            logging.warning("Resumed with config changes: %s.", "; ".join(changes))
        return (
            state,
            _with_sample_history(meta["history"]),
            meta.get("train_history", train_history),
        )
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
    return state, history, train_history


def _with_sample_history(history: dict) -> dict:
    """A resumed history, with None for the sample's counts a checkpoint from before them lacks."""
    for key in SAMPLE_HISTORY_KEYS.values():
        history.setdefault(key, [None] * len(history["step"]))
    return history


def _saved_method_state(source, config, spec):
    """An abstract `methods.init_state` tree of the run that wrote ``source``'s checkpoint."""
    if source.latest_step() is None:
        return {}
    step = source.latest_step() if config.init_from_step is None else config.init_from_step
    saved_loss = source.restore_meta(step).get("config", {}).get("loss", {})
    if not methods.names_its_terms(saved_loss):
        return {}  # Written before the loss had named terms: no method state.
    return jax.eval_shape(lambda: methods.init_state(ml_collections.ConfigDict(saved_loss), spec))


def _evaluate(p_eval, state, config, sharding, source, held_out=None) -> dict[str, Any]:
    """Accuracies on the test split, or on ``held_out`` (e.g. the validation set) when given.

    With the EMA model's confusion matrix (rows: true class, columns:
    predicted) and both models' predicted-class counts, from the same pass.
    """
    batches = input_pipeline.evaluation(
        config.data, source=source, sharding=sharding, held_out=held_out
    )
    totals = evaluation.accumulate_hits(p_eval(state, batch) for batch in batches)
    ema_accuracy, ema_per_class = evaluation.accuracies(totals["ema_correct"], totals["count"])
    raw_accuracy, _ = evaluation.accuracies(totals["raw_correct"], totals["count"])
    return {
        "ema_accuracy": ema_accuracy,
        "raw_accuracy": raw_accuracy,
        "per_class_accuracy": ema_per_class,
        "num_examples": int(totals["count"].sum()),
        "confusion": totals["ema_confusion"].astype(int).tolist(),
        "ema_predicted": totals["ema_predicted"].astype(int).tolist(),
        "raw_predicted": totals["raw_predicted"].astype(int).tolist(),
    }


# The unlabeled images every evaluation predicts (`input_pipeline.unlabeled_sample`):
# one more forward pass of each model over this many images.
UNLABELED_SAMPLE_SIZE = 512
# The evaluation history's keys for that sample's predicted-class counts.
SAMPLE_HISTORY_KEYS = {
    "ema_predicted": "unlabeled_predicted_ema",
    "raw_predicted": "unlabeled_predicted_raw",
}


def _record_sample_predictions(p_eval, state, config, sharding, source, sample, history):
    """Appends both models' predicted-class counts on the unlabeled sample to ``history``.

    Returns the number of classes each model predicts for none of it.
    """
    predicted = _evaluate(p_eval, state, config, sharding, source, held_out=sample)
    unpredicted = {}
    for key, history_key in SAMPLE_HISTORY_KEYS.items():
        history[history_key].append(predicted[key])
        unpredicted[key] = len(diagnostics.unpredicted_classes(predicted[key]))
    return unpredicted


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


def _is_due(step: int, every: int, total: int) -> bool:
    return step % every == 0 or step == total


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
    # The labeled subset the run will draw, once here: a class with too few
    # examples is refused before the workdir is touched.
    train_labels = source.train_labels()
    held_out = splits.select_validation_indices(
        train_labels,
        num_per_class=config.data.num_validation,
        seed=config.seed,
        num_classes=info.num_classes,
    )
    splits.select_labeled_indices(
        train_labels,
        num_labeled=config.data.num_labeled,
        seed=config.seed,
        imbalance_ratio=config.data.imbalance_ratio,
        num_classes=info.num_classes,
        exclude=held_out if held_out.size else None,
    )
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
                results = _train(config, workdir, source, started, accept)
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
            _write_report(workdir, config, results["history"], results["train_history"], results)
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


def _train(
    config: ml_collections.ConfigDict,
    workdir: str,
    source,
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
    info = source.info
    ema_note = evaluation.ema_horizon_note(config.ema_decay, config.total_steps)
    if ema_note:
        logging.warning("%s", ema_note)
    spec = state_spec(config, info, source.train_labels())
    graphdef, state, tx = create_train_state(config, info, spec)
    mesh = make_mesh()
    data_sharding = NamedSharding(mesh, P("data"))
    shardings = state_sharding(config, info, mesh, spec)
    # Laid out over the mesh first, so a checkpoint is restored straight into
    # its shards on every process (no array crosses hosts).
    state = jax.device_put(state, shardings)
    state, history, train_history = _restore_or_initialise(config, state, checkpointer, spec)
    # Read once: the held-out examples every evaluation also scores (None without).
    validation_set = input_pipeline.validation_examples(
        config.data, source=source, seed=config.seed
    )
    # Read once: the unlabeled images every evaluation predicts, the same at each.
    unlabeled_sample = input_pipeline.unlabeled_sample(
        config.data, source=source, seed=config.seed, size=UNLABELED_SAMPLE_SIZE
    )
    is_first_process = jax.process_index() == 0
    # The first PNG a minute into the loop, not at the first evaluation: a short
    # run draws it once, at its end (a drawing is ~0.2-0.8 s of CPU).
    last_plot = time.perf_counter()
    start_step = int(state.step)
    train_batches = make_train_batches(
        config, source=source, sharding=data_sharding, start_step=start_step
    )
    p_train, p_eval = compile_steps(
        graphdef, tx, config, mesh, shardings, augment=device_augmentation(config, source)
    )
    plan = None
    if start_step < config.total_steps:
        # Compiled here, before the first step, with the first real batch: the loop's
        # calls reuse these executables, and a run that cannot fit stops now.
        first_batch = next(train_batches)
        train_batches = itertools.chain([first_batch], train_batches)
        eval_batch = next(
            input_pipeline.evaluation(config.data, source=source, sharding=data_sharding)
        )
        try:
            plan = memory_plan.check(
                config,
                train_step=p_train,
                eval_step=p_eval,
                state=state,
                train_batch=first_batch,
                eval_batch=eval_batch,
                info=info,
                images_per_step=images_per_step(config),
            )
        except memory_plan.InsufficientMemoryError:
            checkpointer.close()
            raise
        del eval_batch
    accept()
    writer = _metric_writer(workdir)
    progress = monitoring.ProgressLine(
        total_steps=config.total_steps,
        images_per_step=images_per_step(config),
        start_step=start_step,
    )
    if start_step == 0:
        writer.write_hparams({k: v for k, v in flatten(config.to_dict()).items() if v is not None})

    sums = None
    stopped_by = None
    last = None
    first_step_done = None
    # The step after which the run's length is projected (None: too short to need one).
    projection_step = start_step + 1 + monitoring.PROJECTION_STEPS
    projection_step = projection_step if projection_step < config.total_steps else None
    # A stop (Ctrl-C) waits for every step already dispatched. Unchecked, the loop
    # ran up to log_every_steps ahead of the device (a WRN-28-2 on 2 CPU cores: ~18
    # queued steps, 216 s). On a CPU, where steps are long, each is waited for, so a
    # stop waits for the running step only; an accelerator keeps one step queued
    # behind the running one, so that its short steps do not idle between them.
    wait_for_each_step = jax.default_backend() == "cpu"
    in_flight = None
    with preemption.stop_on_signals(multi_process=jax.process_count() > 1) as stop:
        for step in range(start_step, config.total_steps):
            state, metrics = p_train(state, next(train_batches))
            jax.block_until_ready(metrics if wait_for_each_step else in_flight)
            in_flight = metrics
            if first_step_done is None:
                # One wait, at the first step only: it splits start-up and
                # compilation from the training loop in the reported timing.
                jax.block_until_ready(metrics)
                first_step_done = time.perf_counter()
            if step + 1 == projection_step:
                jax.block_until_ready(metrics)  # The timed steps end with this one's end.
                projection, advice = monitoring.run_time_projection(
                    seconds_per_step=(time.perf_counter() - first_step_done)
                    / monitoring.PROJECTION_STEPS,
                    steps_left=config.total_steps - projection_step,
                    config=config,
                    platform=jax.default_backend(),
                )
                logging.info("%s", projection)
                if advice:
                    logging.warning("%s", advice)
            if sums is None:
                sums = monitoring.empty_sums(metrics)
            sums = monitoring.accumulate(sums, metrics, step)
            done = step + 1
            stopping = stop.should_stop(done)
            checkpoint_due = _is_due(done, config.checkpoint_every_steps, config.total_steps)
            eval_due = _is_due(done, config.eval_every_steps, config.total_steps)
            if stopping or checkpoint_due or eval_due or done % config.log_every_steps == 0:
                # The only host sync between steps; raises on a NaN before anything is saved.
                means = monitoring.summarise(sums)
                sums = None
                rate = progress.images_per_second(done)
                writer.write_scalars(done, {**means, "images_per_second": rate})
                accuracy = history["ema_accuracy"][-1] if history["ema_accuracy"] else None
                logging.info(progress.format(done, means, rate, accuracy=accuracy))
                # Every term at -v 1 (they are always in TensorBoard).
                logging.vlog(1, progress.format(done, means, rate, all_terms=True))
                train_history["step"].append(done)
                for term in report.LOSS_TERMS:
                    train_history[term].append(means.get(term))
            if eval_due:
                last = _evaluate(p_eval, state, config, data_sharding, source)
                history["step"].append(done)
                history["ema_accuracy"].append(last["ema_accuracy"])
                history["raw_accuracy"].append(last["raw_accuracy"])
                unpredicted = _record_sample_predictions(
                    p_eval, state, config, data_sharding, source, unlabeled_sample, history
                )
                scalars = {
                    "eval/ema_accuracy": last["ema_accuracy"],
                    "eval/raw_accuracy": last["raw_accuracy"],
                    "eval/classes_lost": len(diagnostics.lost_classes(last["per_class_accuracy"])),
                    "eval/unlabeled_classes_unpredicted_ema": unpredicted["ema_predicted"],
                    "eval/unlabeled_classes_unpredicted_raw": unpredicted["raw_predicted"],
                }
                held_out = ""
                if validation_set is not None:
                    val = _evaluate(p_eval, state, config, data_sharding, source, validation_set)
                    history["val_ema_accuracy"].append(val["ema_accuracy"])
                    history["val_raw_accuracy"].append(val["raw_accuracy"])
                    scalars["eval/val_ema_accuracy"] = val["ema_accuracy"]
                    held_out = f"; validation EMA {val['ema_accuracy']:.4f}"
                writer.write_scalars(done, scalars)
                logging.info(
                    "step %d: test accuracy EMA %.4f, raw %.4f%s",
                    done,
                    last["ema_accuracy"],
                    last["raw_accuracy"],
                    held_out,
                )
                if is_first_process:
                    # summary.md at every evaluation; the PNG at most once a
                    # minute, and always at the end (finished or stopped).
                    plot = time.perf_counter() - last_plot >= PLOT_EVERY_SECONDS
                    _write_report(workdir, config, history, train_history, plot=plot)
                    last_plot = time.perf_counter() if plot else last_plot
            if checkpoint_due or stopping:
                checkpointer.save(
                    done,
                    state,
                    {
                        "history": history,
                        "train_history": train_history,
                        "compatibility": compatibility(config),
                        "config": json.loads(config.to_json()),
                    },
                    force=True,
                )
            if stopping:
                stopped_by = stop.signal_name
                break
    checkpointer.close()
    writer.flush()
    loop_done = time.perf_counter()

    final_step = int(state.step)
    if stopped_by is not None:
        if is_first_process and history["step"]:
            _write_report(workdir, config, history, train_history)
        logging.warning(
            "Stopped by %s at step %d with a checkpoint; rerun the same command to resume.",
            stopped_by,
            final_step,
        )
        return {"status": "preempted", "step": final_step}
    if last is None or history["step"][-1] != final_step:
        # Resumed at the end (nothing left to train): evaluate the final state once.
        last = _evaluate(p_eval, state, config, data_sharding, source)
    reported = evaluation.reported_evaluations(
        history["step"], last=config.median_of_last_evals, total_steps=config.total_steps
    )
    results = {
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
        "unlabeled_sample": _describe_sample(unlabeled_sample, config.data.num_classes),
        # The labeled set a class: data.num_labeled=0 keeps the data's own counts.
        "labeled_per_class": [int(count) for count in spec.labeled_class_counts],
        # The model output that predicts: "logits", or the head a term asks for (ABC's).
        "evaluation_head": methods.evaluation_head(config.loss),
        "class_names": list(source.info.class_names or ()) or None,
        "unlabeled_pool": input_pipeline.unlabeled_pool_counts(
            config.data, source=source, seed=config.seed
        ),
        # The labels training saw wrong (data.label_noise): the setting and every change.
        "label_noise": input_pipeline.label_noise_record(
            config.data, source=source, seed=config.seed
        ),
        "validation": evaluation.chosen_by_validation(
            history, num_examples=None if validation_set is None else len(validation_set[1])
        ),
        "num_test_examples": last["num_examples"],
        "steps": final_step,
        "timing": _timing(started, first_step_done, loop_done, final_step - start_step),
        # The estimate made before the first step, beside the peak the process reached.
        "memory": {
            **(plan.record() if plan is not None else {"estimates": None}),
            "measured_peak_rss_bytes": memory_plan.peak_resident_bytes(),
        },
        "history": history,
        "train_history": train_history,
        "config": json.loads(config.to_json()),
    }
    return results


def _write_report(workdir, config, history, train_history, results=None, plot=True) -> None:
    report.write_summary(
        workdir, config=config, history=history, train_history=train_history, results=results
    )
    if plot and config.get("plot_curves", True):
        report.plot_curves(
            workdir,
            history=history,
            train_history=train_history,
            terms=report.drawn_terms(config),
        )


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
