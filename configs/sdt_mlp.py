"""The self-defined target (SDT, arXiv 2403.12116) as its paper ran it: semi-supervised MNIST MLP.

Commands (two stages, as the paper: supervised pre-training on the labeled
images, then the semi-supervised stage from its weights):
  python -m muscle_jax.main --config=configs/sdt_mlp.py:stage=pretrain \\
      --workdir=/tmp/sdt_pretrain --config.data.data_dir=DIR
  python -m muscle_jax.main --config=configs/sdt_mlp.py \\
      --workdir=/tmp/sdt_semi --config.data.data_dir=DIR \\
      --config.init_from=/tmp/sdt_pretrain/checkpoints
Without ``init_from`` the semi-supervised stage starts from scratch, and
then collapses: ``dataset=digits,total_steps=240`` from scratch predicted one
class for every test image from its first evaluation (10.0 %); the
pre-training is what the unlabeled targets build on.
Variants (after the colon): ``dataset=digits`` (scikit-learn's 8x8 digits,
nothing to prepare; 100 labels), ``num_labeled=N``, ``seed=K``,
``total_steps=N`` (default: the recipe's epochs as steps, below), and the
method variants every config takes.

Data: TFDS ``mnist`` prepared in DIR (docs/datasets.md; downloads are off by
default); 600 labels, 60 a class, kept out of the unlabeled pool (the
authors' code splits the training set into 600 labeled and 59,400 unlabeled
images).

The recipe, from the authors' code (github.com/neurophysics-cnrsthales/
unsupervised-target, configFile/semi_bp/600/config.json and bp/: the paper's
own text beyond its abstract could not be read here, so no value below is
confirmed against it; docs/method.md lists what differs and why):
- MLP 784-5000-10 (Lee 2013's network): one hidden layer of 5,000 ReLU units,
  dropout 0.3 on the input and 0.5 on the hidden layer; 10 sigmoid outputs, one
  per class (a neuron is its class; prediction is the argmax).
- Targets: a labeled image's one-hot label; an unlabeled image's k = 1 winner
  of (output - H), H the homeostasis thresholds, moved by gamma = 0.003 towards
  every output winning 1/10 of the batch (``loss.sdt``). Loss: the code's
  cross-entropy taken over the sigmoid outputs (``criterion=cross_entropy``;
  the paper's unsupervised runs use the squared error). These two rules are
  the whole objective: the SDT term carries the labeled images too, so the
  separate supervised term is weighted 0.
- Adam, no weight decay, no EMA of the weights (``ema_decay=0``).
- Batches: 32 labeled (the code's pre-training and supervised batch) and 256
  unlabeled (its unsupervised batch) a step.
- Epochs: 200 of pre-training on the labeled images, then 400 over the
  unlabeled ones; as steps: 200 * ceil(600 / 32) = 3,800 and
  400 * ceil(59,400 / 256) = 93,200 (digits: 800 and 2,400).
- Learning rate (ours: the code gives each layer its own rate and
  schedules): pre-training 1e-3 (its hidden layer's), semi-supervised 1e-4
  (its hidden layer's base rate), both with the library's cosine decay.

Expected accuracy: the paper reports 96.6 % on MNIST with 600 labels; not
measured with this code. Expected run time (an estimate, not a measurement):
the MLP costs ~4 M multiply-adds an image, ~7 GFLOP a step of 288 images
forward and backward, ~7e14 FLOP for the 97,000 steps: minutes on a GPU, so
the host's input pipeline sets the pace there; hours on 2 CPU cores. On
digits (64 inputs, ~0.4 M multiply-adds an image) the 3,200 steps take
minutes on 2 CPU cores.
"""

import math

from muscle_jax import config_defaults

# What the recipe's epochs are over: the training split's size and the labels.
TRAIN_SIZES = {"mnist": 60_000, "digits": 1_497}
DEFAULT_LABELS = {"mnist": 600, "digits": 100}
STAGES = ("semi", "pretrain")
PRETRAIN_EPOCHS = 200
SEMI_EPOCHS = 400
LABELED_BATCH = 32
UNLABELED_RATIO = 8  # 8 * 32 = 256 unlabeled images a step.
HIDDEN = 5000
EVAL_EVERY_EPOCHS = 10


def get_config(arg=None):
    variants = config_defaults.parse_arg(
        arg,
        dataset="mnist",
        stage="semi",
        num_labeled=0,  # 0: the dataset's DEFAULT_LABELS.
        seed=0,
        total_steps=0,  # 0: the recipe's epochs as steps.
        imbalance_ratio=1.0,
        **{**config_defaults.METHOD_VARIANTS, "method": "none"},
    )
    if variants.dataset not in TRAIN_SIZES:
        raise ValueError(
            f"Config arg dataset={variants.dataset!r} is not one of {tuple(TRAIN_SIZES)}."
        )
    if variants.stage not in STAGES:
        raise ValueError(f"Config arg stage={variants.stage!r} is not one of {STAGES}.")
    num_labeled = variants.num_labeled or DEFAULT_LABELS[variants.dataset]
    if variants.stage == "pretrain":
        if variants.method != "none":
            raise ValueError(
                f"Config arg stage=pretrain trains on the labeled images alone; it takes no "
                f"method={variants.method} (leave method unset)."
            )
        # Supervised on the labeled images alone: no unlabeled batch.
        variants.method = "supervised"
        steps_per_epoch = math.ceil(num_labeled / LABELED_BATCH)
        epochs, learning_rate = PRETRAIN_EPOCHS, 1e-3
    else:
        unlabeled = TRAIN_SIZES[variants.dataset] - num_labeled
        steps_per_epoch = math.ceil(unlabeled / (LABELED_BATCH * UNLABELED_RATIO))
        epochs, learning_rate = SEMI_EPOCHS, 1e-4
    total_steps = variants.total_steps or epochs * steps_per_epoch

    config = config_defaults.base_config()
    config.seed = variants.seed
    config.data.name = variants.dataset
    config.data.num_classes = 10
    config.data.num_labeled = num_labeled
    config.data.imbalance_ratio = variants.imbalance_ratio
    config.data.exclude_labeled_from_unlabeled = True
    config.data.batch_size = LABELED_BATCH
    config.data.unlabeled_ratio = UNLABELED_RATIO

    config.model.name = "mlp"
    config.model.kwargs.hidden_sizes = (HIDDEN,)
    config.model.kwargs.dropout_rate = 0.5
    config.model.kwargs.input_dropout_rate = 0.3

    # The target rule is the whole objective: labels for labeled images, the k
    # winners after homeostasis for unlabeled ones (the SDT term does both).
    config.loss.unsupervised = "sdt"
    config.loss.unsupervised_weight = 1.0
    config.loss.sdt.k = 1
    config.loss.sdt.rate = 0.003
    config.loss.sdt.output = "sigmoid"
    config.loss.sdt.criterion = "cross_entropy"

    config.optimizer.name = "adam"
    config.optimizer.learning_rate = learning_rate
    config.optimizer.weight_decay = 0.0
    config.ema_decay = 0.0

    config.total_steps = total_steps
    every = min(EVAL_EVERY_EPOCHS * steps_per_epoch, total_steps)
    config.eval_every_steps = every
    config.checkpoint_every_steps = every
    config.log_every_steps = min(100, every)
    config_defaults.apply_variants(config, variants)
    # With the SDT term on, it carries the labeled images' targets: the separate
    # supervised term (cross-entropy on the logits) would count them twice.
    config.loss.supervised_weight = 0.0 if config.loss.unsupervised == "sdt" else 1.0
    return config
