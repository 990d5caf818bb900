"""The full config schema with METHOD.md's defaults, shared by `configs/*.py`.

Every key the trainer reads is declared here, so a typo in a command-line
override (``--config.totl_steps=10``) is an error from ml_collections rather
than a silently ignored setting. Dataset configs start from `base_config()`
and change only what differs; `parse_arg` reads their ``get_config(arg)``
variants (``--config=configs/cifar10.py:num_labeled=250,method=mixmatch``).

Defaults marked "protocol" are the FixMatch protocol that SSL papers share;
defaults marked "ours" are choices the MUSCLE abstract does not fix.
"""

import ml_collections
from ml_collections import config_dict

# What a variant's ``method=`` means for the loss config.
METHODS = ("fixmatch", "mixmatch", "mean_teacher", "mse", "none", "supervised")


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # Data.
    config.dataset = "cifar10"
    config.data_dir = config_dict.placeholder(str)  # None: TFDS's default directory.
    config.download = False  # Never reach the network unless asked to.
    config.num_classes = 10
    config.num_labeled = 4000
    config.imbalance_ratio = 1.0  # > 1: long-tailed labeled subset (bias experiments).
    config.exclude_labeled_from_unlabeled = False  # protocol: all images are unlabeled too.
    config.seed = 0
    config.batch_size = 64  # protocol: global labeled batch.
    config.unlabeled_ratio = 7  # protocol: mu, unlabeled images per labeled one.
    config.eval_batch_size = 256

    # Model.
    config.model_name = "wrn28_2"
    config.model_kwargs = ml_collections.ConfigDict()
    config.overclustering_heads = 0  # ours: IIC's over-clustering heads off by default.
    config.overclustering_factor = 5
    config.compute_dtype = "float32"  # "bfloat16" on accelerators.

    # Loss: L = w_s L_sup + w_c(t) L_cons - w_mi(t) MI.
    config.loss = ml_collections.ConfigDict()
    config.loss.consistency = "fixmatch"  # fixmatch | mse | mean_teacher | mixmatch | none
    config.loss.supervised_weight = 1.0  # 0 for MI-only pre-training.
    config.loss.consistency_weight = 1.0  # protocol (FixMatch lambda_u).
    config.loss.consistency_rampup = "none"  # none | linear | sigmoid
    config.loss.consistency_rampup_steps = 0
    # ours. configs/digits.py uses 3, chosen by its MI-weight ablation on tuning
    # seeds (README, "Experiments"); one small dataset at 3 seeds could not
    # separate 1 from 3, so the library-wide default stays 1.
    config.loss.mi_weight = 1.0
    config.loss.mi_rampup = "sigmoid"  # ours.
    config.loss.mi_rampup_steps = 0  # ours: 0 = full weight from step 0.
    config.loss.lamb = 1.0  # IIC's lambda: 1 is the true mutual information.
    config.loss.mi_on_labeled = False  # ours: MI on the unlabeled views only.
    config.loss.overclustering_weight = 1.0  # relative to mi_weight.
    config.loss.threshold = 0.95  # protocol (FixMatch tau).
    config.loss.label_smoothing = 0.0
    config.loss.mixmatch_temperature = 0.5  # MixMatch paper.
    config.loss.mixmatch_alpha = 0.75  # MixMatch paper.

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
    config.init_from = config_dict.placeholder(str)  # a checkpoint dir to fine-tune from.
    config.init_from_step = config_dict.placeholder(int)  # None: its latest step.
    # Resuming refuses changes to keys that decide what is trained (schedule
    # length, batch sizes, model, method, seed, ...); True continues anyway,
    # e.g. to extend a finished run's total_steps.
    config.allow_config_change_on_resume = False
    return config


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


def apply_method(config: ml_collections.ConfigDict, method: str, *, use_mi: bool) -> None:
    """Sets the loss for a named base method, with or without the MUSCLE MI term.

    Call it after ``total_steps`` is set: the ramp-ups of MixMatch and Mean
    Teacher last 16k steps (their papers' choice) or a quarter of a shorter run.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    if method == "supervised":
        config.loss.consistency = "none"
        use_mi = False
        config.unlabeled_ratio = 0
    else:
        config.loss.consistency = method
    rampup_steps = min(16384, config.total_steps // 4)
    if method == "mixmatch":
        # MixMatch's own protocol: L2 weight 75 (CIFAR-10), linear ramp-up.
        config.loss.consistency_weight = 75.0
        config.loss.consistency_rampup = "linear"
        config.loss.consistency_rampup_steps = rampup_steps
    if method in ("mean_teacher", "mse"):
        config.loss.consistency_weight = 10.0
        config.loss.consistency_rampup = "sigmoid"
        config.loss.consistency_rampup_steps = rampup_steps
    if not use_mi:
        config.loss.mi_weight = 0.0


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

    Parses ``arg`` for ``num_labeled``, ``method``, ``mi``, ``seed``,
    ``imbalance_ratio``, ``total_steps`` and the config's ``extra_variants``,
    and returns ``(config, variants)``. The caller changes what its dataset
    needs, then calls `apply_method` with ``variants.method`` and ``variants.mi``
    (last, since the supervised baseline turns the unlabeled batch off).
    """
    variants = parse_arg(
        arg,
        num_labeled=num_labeled,
        method="fixmatch",
        mi=True,
        seed=0,
        imbalance_ratio=1.0,
        total_steps=total_steps,
        **extra_variants,
    )
    config = base_config()
    config.dataset = dataset
    config.num_classes = num_classes
    config.model_name = model_name
    config.num_labeled = variants.num_labeled
    config.imbalance_ratio = variants.imbalance_ratio
    config.seed = variants.seed
    config.total_steps = variants.total_steps
    # A short variant run still evaluates and checkpoints at its end.
    config.eval_every_steps = min(config.eval_every_steps, variants.total_steps)
    config.checkpoint_every_steps = min(config.checkpoint_every_steps, variants.total_steps)
    return config, variants
