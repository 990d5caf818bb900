"""The full config schema with docs/method.md's defaults, shared by `configs/*.py`.

Every key the trainer reads is declared here, so a typo in a command-line
override (``--config.totl_steps=10``) is an error from ml_collections rather
than a silently ignored setting. The config has one section per concern,
and each module takes its section whole: ``data`` (the input pipeline),
``model`` (`models.create_model`), ``loss`` (the objective: which term of
each role and their weights, plus a section ``loss.<term>`` per method,
defined with the method in `muscle_jax.methods`) and ``optimizer``; the
training loop's keys sit at the top. Dataset configs start from
`base_config()` and change only what differs; `parse_arg` reads their
``get_config(arg)`` variants
(``--config=configs/cifar10.py:num_labeled=250,method=mixmatch,unsupervised=sdt``).

Defaults marked "protocol" are the FixMatch protocol that SSL papers share;
defaults marked "ours" are choices the MUSCLE abstract does not fix.
"""

from typing import Any

import ml_collections
from ml_collections import config_dict

from muscle_jax import methods

# What a variant's ``method=`` means: a consistency term, or "supervised"
# (cross-entropy on the labeled images only, no unlabeled batch).
SUPERVISED_ONLY = "supervised"

# Keys that moved into sections; an old command line names the new key.
MOVED_KEYS = {
    "dataset": "data.name",
    "data_dir": "data.data_dir",
    "download": "data.download",
    "num_classes": "data.num_classes",
    "num_labeled": "data.num_labeled",
    "imbalance_ratio": "data.imbalance_ratio",
    "exclude_labeled_from_unlabeled": "data.exclude_labeled_from_unlabeled",
    "batch_size": "data.batch_size",
    "unlabeled_ratio": "data.unlabeled_ratio",
    "eval_batch_size": "data.eval_batch_size",
    "model_name": "model.name",
    "model_kwargs": "model.kwargs",
    "overclustering_heads": "model.overclustering_heads",
    "overclustering_factor": "model.overclustering_factor",
    "compute_dtype": "model.compute_dtype",
    "loss.mi_weight": "loss.unsupervised_weight",
    "loss.mi_rampup": "loss.unsupervised_rampup",
    "loss.mi_rampup_steps": "loss.unsupervised_rampup_steps",
    "loss.lamb": "loss.iic.lamb",
    "loss.mi_on_labeled": "loss.iic.on_labeled",
    "loss.overclustering_weight": "loss.iic.overclustering_weight",
    "loss.threshold": "loss.fixmatch.threshold",
    "loss.label_smoothing": "loss.cross_entropy.label_smoothing",
    "loss.mixmatch_temperature": "loss.mixmatch.temperature",
    "loss.mixmatch_alpha": "loss.mixmatch.alpha",
}


def methods_for_variant() -> tuple[str, ...]:
    """What ``method=`` accepts: every consistency term, and ``supervised``."""
    return (*methods.names(methods.CONSISTENCY), SUPERVISED_ONLY)


# The built-in values of ``method=``.
METHODS = methods_for_variant()

# A config's ``machine=`` variant: the machine its defaults are sized for
# (configs/image_folder.py): "auto" asks JAX's backend when the config loads.
MACHINES = ("auto", "cpu", "accelerator")


def sized_for(machine: str) -> str:
    """``"cpu"`` or ``"accelerator"``: a config's ``machine=`` variant, with ``auto`` resolved.

    ``auto`` is ``cpu`` when `jax.default_backend()` is the CPU, else
    ``accelerator``. Asking starts JAX's backend, and a process that is to join
    a multi-process run must start JAX's distributed runtime first
    (`jax.distributed.initialize` refuses afterwards): where one is announced
    (`distributed.announced`: its environment variables, a recognised
    cluster, or its flags on the command line) ``auto`` is ``accelerator``
    without asking, as multi-host runs are; several CPU processes
    (launch/local.sh) give ``machine=cpu``.

    Raises:
      ValueError: ``machine`` is not one of `MACHINES`.
    """
    if machine not in MACHINES:
        raise ValueError(f"Config arg machine={machine!r} is not one of {MACHINES}.")
    if machine != "auto":
        return machine
    from muscle_jax import distributed  # Deferred: imports JAX (without starting it).

    if distributed.announced():
        return "accelerator"
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "accelerator"


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # The labeled subset, initialisation, data order and augmentations.

    # Data: `input_pipeline` takes this section whole.
    config.data = ml_collections.ConfigDict()
    config.data.name = "cifar10"
    config.data.data_dir = config_dict.placeholder(str)  # None: TFDS's default directory.
    config.data.download = False  # Never reach the network unless asked to.
    # Your own images instead of a named dataset: an image folder or an .npz
    # (muscle_jax/data/files.py, docs/custom.md); data.name then only names it.
    config.data.path = config_dict.placeholder(str)
    # Resize data.path's images to image_size x image_size (None: keep their size).
    config.data.image_size = config_dict.placeholder(int)
    # Without image_size: resize data.path's images larger than this down to it
    # (square), keep smaller ones (None: no limit). configs/image_folder.py on a CPU.
    config.data.max_image_size = config_dict.placeholder(int)
    # Flip in the weak augmentation; None: the dataset's default (the table's, else on).
    config.data.flip = config_dict.placeholder(bool)
    # Where the training views are augmented: "host" (tf.data), "device" (JAX ops
    # in the jitted train step, muscle_jax/data/device_augment.py) or "auto"
    # (muscle_jax/data/device.py: the host on CPU, the device on a GPU or TPU).
    config.data.augment_on = "auto"
    # Ops per strong view of RandAugment (muscle_jax/data/rand_augment_spec.py):
    # 3, USB's and TorchSSL's RandAugment(3, 5), the code behind the modern bases'
    # published tables; the FixMatch paper's own variant used 2.
    config.data.rand_augment_ops = 3
    config.data.num_classes = 10  # 0: the dataset's count (read when it opens).
    config.data.num_labeled = 4000
    config.data.imbalance_ratio = 1.0  # > 1: long-tailed labeled subset (bias experiments).
    # 1: the unlabeled pool is the training split as it is; > 1: long-tailed as the
    # labels (class 0 largest); < -1: the reversed order (USB's protocol).
    config.data.unlabeled_imbalance_ratio = 1.0
    # Label noise on the labeled subset only (muscle_jax/data/label_noise.py): the
    # fraction of labeled examples given a wrong label, 0 = off (ours); "symmetric"
    # (a uniformly drawn other class) or "asymmetric" (class-pair flips). Seeded;
    # results.json's "label_noise" lists every label it changed.
    config.data.label_noise = 0.0
    config.data.label_noise_kind = "symmetric"
    # Labeled training examples a class held out as a validation set (never trained
    # on, evaluated beside the test set; results.json's "validation" is the test
    # accuracy at the step it scores best). 0: none, the protocol's.
    config.data.num_validation = 0
    config.data.exclude_labeled_from_unlabeled = False  # protocol: all images are unlabeled too.
    config.data.batch_size = 64  # protocol: global labeled batch.
    config.data.unlabeled_ratio = 7  # protocol: mu, unlabeled images per labeled one.
    config.data.eval_batch_size = 256
    # The data is read as this many shards (each process reads an equal share),
    # and the global batch is every shard's batch in shard order: with a fixed
    # count it is the same whatever the process count. 0: one per process,
    # fixed when the run starts (a resumed run must keep it: pass the saved
    # value to resume on another process count).
    config.data.num_shards = 0

    # Model: `models.create_model` takes this section whole (heads a loss
    # term needs, e.g. MIO's projector, are added by the methods).
    config.model = ml_collections.ConfigDict()
    config.model.name = "wrn28_2"
    config.model.kwargs = ml_collections.ConfigDict()
    config.model.overclustering_heads = 0  # ours: IIC's over-clustering heads off by default.
    config.model.overclustering_factor = 5
    config.model.compute_dtype = "float32"  # "bfloat16" on accelerators.

    # Loss: L = w_s L_sup + w_c(t) L_cons + w_u(t) L_unsup + w_a L_addon; one term
    # of each role, by name (`muscle_jax.methods`), each with its section below.
    config.loss = ml_collections.ConfigDict()
    config.loss.supervised = "cross_entropy"  # cross_entropy | self_adaptive
    config.loss.consistency = "fixmatch"  # fixmatch | mse | mean_teacher | mixmatch | none
    config.loss.unsupervised = "iic"  # iic (MUSCLE) | sdt | mio | none
    config.loss.supervised_weight = 1.0  # 0 for unsupervised-only pre-training.
    config.loss.consistency_weight = 1.0  # protocol (FixMatch lambda_u).
    config.loss.consistency_rampup = "none"  # none | linear | sigmoid
    config.loss.consistency_rampup_steps = 0
    # ours. configs/digits.py uses 3, chosen by its MI-weight ablation on tuning
    # seeds (docs/results.md); one small dataset at 3 seeds could not
    # separate 1 from 3, so the library-wide default stays 1.
    config.loss.unsupervised_weight = 1.0
    config.loss.unsupervised_rampup = "sigmoid"  # ours.
    config.loss.unsupervised_rampup_steps = 0  # ours: 0 = full weight from step 0.
    # An add-on on top of any base, e.g. ABC's balanced head (abc | none); its
    # terms have their own schedule, so it only has a weight (ABC's paper: 1).
    config.loss.addon = "none"
    config.loss.addon_weight = 1.0
    for name, section in methods.config_sections().items():
        config.loss[name] = section

    # Optimisation.
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"  # sgd (Nesterov) | adam
    config.optimizer.learning_rate = 0.03  # protocol.
    config.optimizer.momentum = 0.9  # protocol.
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4  # protocol (1e-3 for WRN-28-8); kernels only.
    config.optimizer.schedule = "cosine"  # cosine: lr cos(7 pi k / 16 K); constant.
    config.optimizer.warmup_steps = 0
    config.ema_decay = 0.999  # protocol: EMA of parameters for evaluation.

    # Loop.
    config.total_steps = 2**20  # protocol.
    config.log_every_steps = 100
    config.eval_every_steps = 1024
    config.checkpoint_every_steps = 1024
    config.keep_checkpoints = 3
    config.median_of_last_evals = 20  # protocol: report the median of the last 20.
    # WORKDIR/curves.png, drawn at evaluations (at most once a minute) and at the
    # end; False skips drawing it (~0.5 s of CPU a drawing; summary.md is kept).
    config.plot_curves = True
    config.init_from = config_dict.placeholder(str)  # a checkpoint dir to fine-tune from.
    config.init_from_step = config_dict.placeholder(int)  # None: its latest step.
    # Resuming refuses changes to keys that decide what is trained (schedule
    # length, batch sizes, model, method, seed, ...); True continues anyway,
    # e.g. to extend a finished run's total_steps.
    config.allow_config_change_on_resume = False
    # The memory a run may use, in GiB: the host's RAM on the CPU, a device's on a GPU or
    # TPU. 0: detected (muscle_jax/memory_plan.py). A run estimated to need more is
    # refused before its first step; set it to allow more (or less) than detected.
    config.memory_limit_gb = 0.0
    # A trace of `profile_steps` steps (0: none), from `profile_first_step` steps
    # after the run (or its resume) starts, written under the workdir for
    # TensorBoard's profile tab (clu's periodic_actions.Profile).
    config.profile_steps = 0
    config.profile_first_step = 10
    return config


def set_model_kwargs(config: ml_collections.ConfigDict, kwargs: dict[str, Any] | None) -> None:
    """Adds or replaces ``config.model.kwargs`` entries (`command_line.split_model_kwargs`).

    ``None`` empties them: the model then starts from its own defaults.
    """
    with config.model.kwargs.unlocked():
        if kwargs is None:
            for key in list(config.model.kwargs):
                del config.model.kwargs[key]
            return
        for key, value in kwargs.items():
            if key in config.model.kwargs:
                del config.model.kwargs[key]  # Its type may change (a list for a tuple).
            config.model.kwargs[key] = value


def parse_arg(arg: str | None, **defaults):
    """Parses ``"k1=v1,k2=v2"`` into a ConfigDict over ``defaults``' keys and types.

    An unknown key or a value of the wrong type is an error naming them, so a
    mistyped variant cannot fall back to a default silently.
    """
    result = ml_collections.ConfigDict(defaults)
    if not arg:
        return result
    for item in arg.split(","):
        if "=" not in item:
            raise ValueError(f"Config arg {item!r} is not of the form key=value (in {arg!r}).")
        key, value = (part.strip() for part in item.split("=", 1))
        if key not in defaults:
            raise ValueError(f"Unknown config arg {key!r}; known: {sorted(defaults)}.")
        kind = type(defaults[key])
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                parsed = value.lower() in ("true", "1")
            else:
                parsed = kind(value)
        except ValueError:
            raise ValueError(
                f"Config arg {key}={value!r} is not a valid {kind.__name__}."
            ) from None
        result[key] = parsed
    return result


def apply_method(
    config: ml_collections.ConfigDict,
    method: str,
    *,
    use_mi: bool = True,
    unsupervised: str | None = None,
    supervised: str = "cross_entropy",
    addon: str = "none",
) -> None:
    """Selects the loss terms for a named base method and unsupervised term.

    Args:
      method: a consistency term (`methods_for_variant`), or ``supervised``:
        cross-entropy on the labeled images only, without an unlabeled batch.
      use_mi: False drops the unsupervised term (the base method alone).
      unsupervised: the unsupervised term; None keeps the config's (``iic``).
      supervised: the supervised term (``cross_entropy`` or ``self_adaptive``).
      addon: the add-on term (``none`` or ``abc``).

    Call it after ``total_steps`` is set: a consistency method's own weight
    ramp-up (MixMatch, Mean Teacher, Pi-model) lasts 16k steps (their papers'
    choice) or a quarter of a shorter run.

    Raises:
      ValueError: an unknown name, or ``use_mi=False`` with an unsupervised term.
    """
    if method not in methods_for_variant():
        raise ValueError(f"Unknown method {method!r}; choose one of {methods_for_variant()}.")
    methods.get(methods.SUPERVISED, supervised)
    methods.get(methods.ADDON, addon)
    if unsupervised is not None:
        methods.get(methods.UNSUPERVISED, unsupervised)
        if not use_mi and unsupervised != "none":
            raise ValueError(
                f"mi=False drops the unsupervised term, but unsupervised={unsupervised!r} "
                "asks for one; give one of them."
            )
    unsupervised = unsupervised or config.loss.unsupervised
    if method == SUPERVISED_ONLY:
        method = "none"
        use_mi = False
        config.data.unlabeled_ratio = 0
    config.loss.consistency = method
    config.loss.supervised = supervised
    config.loss.addon = addon
    config.loss.unsupervised = unsupervised if use_mi else "none"
    if not use_mi:
        config.loss.unsupervised_weight = 0.0
    default_rampup = min(16384, config.total_steps // 4)
    weighting = methods.get(methods.CONSISTENCY, method).weighting
    if weighting:
        config.loss.consistency_weight = weighting["weight"]
        config.loss.consistency_rampup = weighting["rampup"]
        steps = weighting["rampup_steps"]
        config.loss.consistency_rampup_steps = default_rampup if steps is None else steps


def dataset_config(
    arg: str | None,
    *,
    dataset: str,
    num_classes: int,
    model_name: str,
    num_labeled: int,
    total_steps: int = 2**20,
    **extra_variants,
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """`base_config()` for one dataset, with the variants every config accepts.

    Parses ``arg`` for ``num_labeled``, ``method``, ``mi``, ``unsupervised``,
    ``supervised``, ``seed``, ``imbalance_ratio``, ``total_steps`` and the
    config's ``extra_variants``, and returns ``(config, variants)``. The
    caller changes what its dataset needs, then calls `apply_variants` (last,
    since the supervised baseline turns the unlabeled batch off).
    """
    variants = parse_arg(
        arg,
        num_labeled=num_labeled,
        seed=0,
        imbalance_ratio=1.0,
        total_steps=total_steps,
        **METHOD_VARIANTS,
        **extra_variants,
    )
    config = base_config()
    config.data.name = dataset
    config.data.num_classes = num_classes
    config.model.name = model_name
    config.data.num_labeled = variants.num_labeled
    config.data.imbalance_ratio = variants.imbalance_ratio
    config.seed = variants.seed
    config.total_steps = variants.total_steps
    # A short variant run still evaluates and checkpoints at its end.
    config.eval_every_steps = min(config.eval_every_steps, variants.total_steps)
    config.checkpoint_every_steps = min(config.checkpoint_every_steps, variants.total_steps)
    return config, variants


# The variants that choose the loss terms, accepted by every config:
# ``method`` (the consistency term, or "supervised"), ``mi`` (False: no
# unsupervised term), ``unsupervised`` ("" keeps iic), ``supervised`` and
# ``addon`` ("" keeps none; ``abc`` adds ABC's balanced head).
METHOD_VARIANTS = {
    "method": "fixmatch",
    "mi": True,
    "unsupervised": "",
    "supervised": "",
    "addon": "",
}


def apply_variants(config: ml_collections.ConfigDict, variants: ml_collections.ConfigDict) -> None:
    """`apply_method` with a config's parsed `METHOD_VARIANTS`."""
    apply_method(
        config,
        variants.method,
        use_mi=variants.mi,
        unsupervised=variants.unsupervised or None,
        supervised=variants.supervised or "cross_entropy",
        addon=variants.addon or "none",
    )
