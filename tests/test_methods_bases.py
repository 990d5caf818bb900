"""The modern base methods as consistency terms: each trains, carries its state and resumes.

Their math is tested against hand-computed values in
tests/test_losses_bases_thresholds.py and tests/test_losses_bases_alignment.py;
here the terms run inside the trainer on the tiny digits config over the 8
simulated devices of conftest.py.
"""

import dataclasses
import inspect
import json
import math
import re
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from muscle_jax import config_validation, input_pipeline, losses, methods, objective, train
from muscle_jax.methods import adaptive, imbalance

from .helpers import latest_state, load_config
from .shared_runs import run_until_step
from .test_train import run_steps

# The modern bases, and debiased pseudo-labelling (an imbalance-aware FixMatch).
BASES = ("flexmatch", "freematch", "softmatch", "adamatch", "uda", "dash", "debiased")
STATEFUL = ("flexmatch", "freematch", "softmatch", "adamatch", "dash", "debiased")


def term_options(term: methods.Term, section, total_steps: int) -> dict:
    """The keyword options a registered term passes to its step: ``<name>_options`` beside it."""
    build = getattr(sys.modules[term.loss.__module__], f"{term.name}_options", None)
    if build is None:
        return {}  # A FixMatch-era kind: its one option, the threshold, is muscle_loss's own.
    if "total_steps" in inspect.signature(build).parameters:
        return build(section, total_steps)
    return build(section)


@pytest.mark.parametrize("name", methods.names(methods.CONSISTENCY))
def test_every_registered_consistency_term_runs_through_muscle_loss(name):
    """`losses.muscle_loss(consistency=name)` is the registered term's own loss, state included.

    Parametrized over the registry, not a list kept beside it: a consistency
    term registered without a kind in `muscle_loss`'s table fails here.
    """
    term = methods.get(methods.CONSISTENCY, name)
    section = ml_collections.ConfigDict(dict(term.defaults))
    keys = jax.random.split(jax.random.key(0), 5)
    labeled, labels = 2 * jax.random.normal(keys[0], (4, 3)), jnp.array([0, 1, 2, 0])
    view_a = 4 * jax.random.normal(keys[1], (6, 3))  # Some rows confident, some not.
    view_b = jax.random.normal(keys[2], (6, 3))
    teacher, student = jax.random.normal(keys[3], (6, 3)), jax.random.normal(keys[4], (6, 3))
    targets = jax.nn.softmax(teacher)  # Mean Teacher's targets, and MixMatch's here.
    index, step, total_steps = jnp.array([0, 2, 4, 5, 7, 9]), jnp.asarray(3), 100
    spec = methods.StateSpec(
        num_train=10, num_classes=3, num_unlabeled=10, labeled_class_counts=(2, 1, 1)
    )
    state = None if term.init_state is None else term.init_state(spec, section)
    inputs = methods.Inputs(
        labeled_logits=labeled,
        labels=labels,
        labeled_index=None,
        supervised_logits=labeled,
        supervised_targets=labels,
        view_a_logits=view_a,
        view_b_logits=view_b,
        teacher_a_logits=teacher,
        unlabeled_index=index,
        step=step,
        total_steps=total_steps,
        num_classes=3,
        # What MixMatch's `prepare` leaves its loss: the mixed batch's logits and targets.
        extras={"mixmatch_student_logits": student, "mixmatch_targets": targets},
    )
    expected = term.loss(inputs, section, state)
    total, aux = losses.muscle_loss(
        labeled,
        labels,
        view_a,
        view_b,
        consistency=name,
        supervised_weight=0.0,
        mutual_information_weight=0.0,
        threshold=section.get("threshold", 0.95),
        consistency_targets=targets,
        student_logits=student,
        consistency_state={} if state is None else state,
        consistency_options=term_options(term, section, total_steps),
        unlabeled_index=index,
        step=step,
    )
    np.testing.assert_allclose(aux["consistency"], expected.value, rtol=1e-6)
    np.testing.assert_allclose(total, expected.value, rtol=1e-6)
    for key, value in expected.metrics.items():
        np.testing.assert_allclose(aux[key], value, rtol=1e-6, err_msg=key)
    if expected.state is not None:
        assert name in losses.STATEFUL_CONSISTENCY_KINDS
        carried = aux["consistency_state"]
        assert jax.tree.structure(carried) == jax.tree.structure(expected.state)
        for a, b in zip(jax.tree.leaves(carried), jax.tree.leaves(expected.state), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_muscle_loss_runs_debiased_as_its_registered_term_by_hand():
    # tests/test_losses_base_steps.py's hand check: q_hat = (0.8, 0.2), tau 1, m 0.5. The
    # weak view (0.5, 0) is pseudo-labelled class 1 (softmax(z - log q): p = 0.7081 >= 0.7),
    # q_hat moves to 0.5 q + 0.5 softmax(0.5, 0) = (0.7112294, 0.2887706), and the loss is
    # CE(0 + log q_new, 1) = -log 0.2887706 = 1.242124. The labeled CE of (0, 0) is log 2.
    term = methods.get(methods.CONSISTENCY, "debiased")
    section = _section("debiased", tau=1.0, momentum=0.5, threshold=0.7)
    state = {"q_hat": jnp.array([0.8, 0.2])}
    labeled, labels = jnp.array([[0.0, 0.0]]), jnp.array([0])
    weak, strong = jnp.array([[0.5, 0.0]]), jnp.array([[0.0, 0.0]])
    inputs = methods.Inputs(
        labeled_logits=labeled,
        labels=labels,
        labeled_index=None,
        supervised_logits=labeled,
        supervised_targets=labels,
        view_a_logits=weak,
        view_b_logits=strong,
    )
    result = term.loss(inputs, section, state)
    total, aux = losses.muscle_loss(
        labeled,
        labels,
        weak,
        strong,
        consistency="debiased",
        mutual_information_weight=0.0,
        consistency_state=state,
        consistency_options=imbalance.debiased_options(section),
    )
    for value in (result.value, aux["consistency"]):
        np.testing.assert_allclose(value, 1.242124, atol=1e-6)
    assert float(aux["mask_rate"]) == float(result.metrics["mask_rate"]) == 1.0
    for q_hat in (result.state["q_hat"], aux["consistency_state"]["q_hat"]):
        np.testing.assert_allclose(q_hat, [0.7112294, 0.2887706], atol=1e-6)
    np.testing.assert_allclose(total, math.log(2.0) + 1.242124, atol=1e-6)
    assert "debiased" in losses.STATEFUL_CONSISTENCY_KINDS
    # Its state is a statistic of the arrays passed in: refused without it, or with a mask.
    with pytest.raises(ValueError, match=r"needs consistency_state \(from losses\.debiased_init"):
        losses.muscle_loss(labeled, labels, weak, strong, consistency="debiased")
    with pytest.raises(ValueError, match="without unlabeled_where or axis_name"):
        losses.muscle_loss(
            labeled,
            labels,
            weak,
            strong,
            consistency="debiased",
            consistency_state=state,
            unlabeled_where=jnp.ones(1, bool),
        )


@pytest.mark.parametrize("base", BASES)
def test_each_base_alone_trains_a_step_with_the_common_metrics(base):
    config = load_config("tiny", f"method={base},mi=False")
    assert config.loss.consistency == base and config.loss.unsupervised == "none"
    assert config.loss.consistency_weight == 1.0  # Each paper's lambda_u, from the first step.
    state, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 2)
    assert set(objective.METRIC_KEYS) <= set(metrics)
    for key, value in metrics.items():
        assert np.isfinite(value), key
    assert 0.0 <= float(metrics["mask_rate"]) <= 1.0
    assert set(state.method_state) == ({base} if base in STATEFUL else set())


def test_the_flexmatch_record_covers_the_whole_unlabeled_pool():
    config = load_config("tiny", "method=flexmatch")
    # STL-10-like: the unlabeled-only split joins the pool after the training set.
    info = dataclasses.replace(input_pipeline.dataset_info("digits"), num_unlabeled_only=503)
    spec = train.state_spec(config, info)
    assert spec.num_unlabeled == 1497 + 503
    _, state, _ = train.create_train_state(config, info)
    selected = state.method_state["flexmatch"]["selected"]
    assert selected.shape == (2000,) and int(selected.max()) == -1  # Nothing selected yet.
    mesh = train.make_mesh()
    sharding = train.state_sharding(config, info, mesh).method_state["flexmatch"]["selected"]
    assert sharding.spec == P("data")  # 2000 rows over 8 devices: row-sharded.
    odd = dataclasses.replace(info, num_unlabeled_only=500)
    spec = train.state_sharding(config, odd, mesh).method_state["flexmatch"]["selected"].spec
    assert spec == P()


def test_a_flexmatch_record_without_the_pool_size_is_refused_when_built():
    config = load_config("tiny", "method=flexmatch")
    spec = methods.StateSpec(num_train=1497, num_classes=10)  # num_unlabeled not given.
    with pytest.raises(ValueError, match=r"StateSpec\.num_unlabeled=0; build the spec with"):
        methods.init_state(config.loss, spec)


def test_adamatch_can_align_to_the_labeled_histogram():
    config = load_config("tiny", "method=adamatch,num_labeled=100")
    config.data.imbalance_ratio = 10.0
    config.loss.adamatch.alignment_target = "labeled"
    _, state, _ = train.create_train_state(config, input_pipeline.dataset_info("digits"))
    target = np.asarray(state.method_state["adamatch"]["p_target"])
    counts = np.asarray(
        train.state_spec(config, input_pipeline.dataset_info("digits")).labeled_class_counts
    )
    np.testing.assert_allclose(target, counts / counts.sum(), rtol=1e-6)
    assert target[0] > target[-1]  # Long-tailed: class 0 is the largest.


@pytest.mark.parametrize("target", ["uniform", "labeled_ema"])
def test_fixmatch_takes_distribution_alignment_as_an_option(target):
    config = load_config("tiny", "method=fixmatch,mi=False")
    _, plain, _ = train.create_train_state(config, input_pipeline.dataset_info("digits"))
    assert plain.method_state == {}  # Off by default: FixMatch as its paper, no state.
    config.loss.fixmatch.distribution_alignment = target
    config.loss.fixmatch.alignment_momentum = 0.5  # Moves visibly in two steps.
    state, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 2)
    alignment = jax.tree.map(np.asarray, state.method_state["fixmatch"])
    np.testing.assert_allclose(alignment["p_model"].sum(), 1.0, rtol=1e-5)
    assert np.any(alignment["p_model"] != np.float32(0.1)) and bool(alignment["initialised"])
    if target == "uniform":
        np.testing.assert_array_equal(alignment["p_target"], np.full(10, 0.1, np.float32))
    else:  # Moved towards the labeled batch's mean prediction.
        assert np.any(alignment["p_target"] != np.float32(0.1))
    assert 0.0 <= float(metrics["mask_rate"]) <= 1.0


def test_uda_with_training_signal_annealing_masks_the_supervised_term():
    config = load_config("tiny", "method=uda,mi=False")
    config.loss.cross_entropy.tsa = "linear"
    _, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 2)
    # The last of the 2 steps is step 1 of 12: eta = (1 / 12) * (1 - 1/10) + 1/10.
    assert float(metrics["tsa_threshold"]) == pytest.approx(0.9 / 12 + 0.1, rel=1e-5)
    assert 0.0 <= float(metrics["tsa_mask_rate"]) <= 1.0
    mixed = load_config("tiny", "method=mixmatch")
    mixed.loss.cross_entropy.tsa = "log"
    with pytest.raises(config_validation.ConfigError, match="MixMatch trains the supervised"):
        config_validation.validate_config(mixed, num_devices=1)


# The keys this issue added to the bases' sections, (section, key).
ADDED_REFERENCE_KEYS = (
    ("adamatch", "p_model_init"),
    ("fixmatch", "p_model_init"),
    ("softmatch", "p_hat_init"),
    ("debiased", "update_order"),
)


def _section(name: str, **changes) -> ml_collections.ConfigDict:
    section = methods.config_sections()[name]
    section.update(changes)
    return section


def _log(probs) -> jax.Array:
    return jnp.log(jnp.asarray(probs, jnp.float32))


@pytest.mark.parametrize("start, expected_p_model", [("first_batch", 0.8), ("uniform", 0.53)])
def test_fixmatch_alignment_starts_p_model_as_its_section_says(start, expected_p_model):
    # Weak batch mean [0.8, 0.2], EMA 0.9, uniform target. first_batch: p_model = [0.8, 0.2],
    # row 1 aligned [0.65 / 0.8, 0.35 / 0.2] -> [0.317, 0.683]: class 1. uniform: p_model =
    # 0.9 * 0.5 + 0.1 * [0.8, 0.2] = [0.53, 0.47], row 1 -> [0.622, 0.378]: class 0. Row 0 is
    # class 0 either way; every aligned maximum clears 0.6. CE of the strong [0.8, 0.2] to
    # class 0 is -log 0.8, to class 1 -log 0.2.
    term = methods.get(methods.CONSISTENCY, "fixmatch")
    section = _section(
        "fixmatch",
        distribution_alignment="uniform",
        alignment_momentum=0.9,
        threshold=0.6,
        p_model_init=start,
    )
    spec = methods.StateSpec(num_train=4, num_classes=2)
    labeled = _log([[0.5, 0.5]])
    inputs = methods.Inputs(
        labeled_logits=labeled,
        labels=jnp.array([0]),
        labeled_index=None,
        supervised_logits=labeled,
        supervised_targets=jnp.array([0]),
        view_a_logits=_log([[0.95, 0.05], [0.65, 0.35]]),
        view_b_logits=_log([[0.8, 0.2], [0.8, 0.2]]),
    )
    result = term.loss(inputs, section, term.init_state(spec, section))
    np.testing.assert_allclose(result.state["p_model"][0], expected_p_model, rtol=1e-6)
    expected = (-math.log(0.8) - math.log(0.2)) / 2 if start == "first_batch" else -math.log(0.8)
    assert float(result.value) == pytest.approx(expected, rel=1e-5)
    assert float(result.metrics["mask_rate"]) == 1.0


def test_the_bases_sections_pass_their_starts_and_orders_to_the_steps():
    for name, key, options in (
        ("adamatch", "p_model_init", adaptive.adamatch_options),
        ("softmatch", "p_hat_init", adaptive.softmatch_options),
    ):
        assert methods.config_sections()[name][key] == "first_batch"  # USB's start.
        assert options(_section(name))["first_batch"] is True
        assert options(_section(name, **{key: "uniform"}))["first_batch"] is False
    assert methods.config_sections()["debiased"]["update_order"] == "paper"
    usb = imbalance.debiased_options(_section("debiased", update_order="usb"))
    assert usb["update_order"] == "usb"


def test_a_config_saved_before_the_reference_keys_resumes():
    # Checkpoints written before p_model_init, p_hat_init and update_order existed
    # read as the values that go on as those runs did, so their resume is not refused.
    config = load_config("tiny", "method=adamatch")
    saved = json.loads(config.to_json())
    for name, key in ADDED_REFERENCE_KEYS:
        del saved["loss"][name][key]
    assert config_validation.check_resume(saved, config, where="old") == []
    # A run saved with the other start is another run: resuming it with the default is refused.
    saved["loss"]["adamatch"]["p_model_init"] = "uniform"
    with pytest.raises(
        config_validation.ConfigError,
        match=re.escape("loss.adamatch.p_model_init: 'uniform' -> 'first_batch'"),
    ):
        config_validation.check_resume(saved, config, where="old")


@pytest.mark.parametrize(
    "max_prob, expected, kept",
    [
        # The paper's code: rows 0, 2, 3 kept, the mean over those three.
        (False, (-math.log(0.6) - math.log(0.2) - math.log(0.7)) / 3, 0.75),
        # TorchSSL and USB: rows 0 and 3 kept, the mean over the batch of 4.
        (True, (-math.log(0.6) - math.log(0.7)) / 4, 0.5),
    ],
)
def test_training_signal_annealing_reduces_as_its_reference_does(max_prob, expected, kept):
    # Linear TSA at step 5 of 10 with 2 classes: eta = 0.5 * (1 - 1/2) + 1/2 = 0.75.
    # Rows (probabilities, label): ([0.6, 0.4], 0), ([0.9, 0.1], 0), ([0.8, 0.2], 1),
    # ([0.3, 0.7], 1). The label's probability [0.6, 0.9, 0.2, 0.7] keeps rows 0, 2, 3;
    # the largest [0.6, 0.9, 0.8, 0.7] keeps 0 and 3 (row 2 is confidently wrong).
    # Before the paper's mean was fixed, max_prob=False gave the sum over 4: 0.6192.
    term = methods.get(methods.SUPERVISED, "cross_entropy")
    logits = _log([[0.6, 0.4], [0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    labels = jnp.array([0, 0, 1, 1])
    inputs = methods.Inputs(
        labeled_logits=logits,
        labels=labels,
        labeled_index=None,
        supervised_logits=logits,
        supervised_targets=labels,
        step=jnp.asarray(5),
        total_steps=10,
        num_classes=2,
    )
    section = _section("cross_entropy", tsa="linear", tsa_max_prob=max_prob)
    result = term.loss(inputs, section, None)
    assert float(result.metrics["tsa_threshold"]) == pytest.approx(0.75)
    assert float(result.metrics["tsa_mask_rate"]) == kept
    assert float(result.value) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "base, change, message",
    [
        ("flexmatch", lambda s: setattr(s, "mapping", "cubic"), "loss.flexmatch.mapping='cubic'"),
        ("flexmatch", lambda s: setattr(s, "threshold", 1.5), "loss.flexmatch.threshold=1.5"),
        ("freematch", lambda s: setattr(s, "momentum", 1.0), "loss.freematch.momentum=1.0"),
        ("freematch", lambda s: setattr(s, "fairness_weight", -1.0), "fairness_weight=-1.0"),
        ("softmatch", lambda s: setattr(s, "n_sigma", 0.0), "loss.softmatch.n_sigma=0.0"),
        (
            "adamatch",
            lambda s: setattr(s, "alignment_target", "test_set"),
            "alignment_target='test_set'",
        ),
        ("uda", lambda s: setattr(s, "temperature", 0.0), "loss.uda.temperature=0.0"),
        ("dash", lambda s: setattr(s, "gamma", 1.0), "gamma=1.0"),
        ("cross_entropy", lambda s: setattr(s, "tsa", "cosine"), "loss.cross_entropy.tsa='cosine'"),
        (
            "fixmatch",
            lambda s: setattr(s, "distribution_alignment", "test_set"),
            "loss.fixmatch.distribution_alignment='test_set'",
        ),
        (
            "fixmatch",
            lambda s: setattr(s, "p_model_init", "zeros"),
            "loss.fixmatch.p_model_init='zeros' is not one of ('first_batch', 'uniform').",
        ),
        (
            "adamatch",
            lambda s: setattr(s, "p_model_init", "first"),
            "loss.adamatch.p_model_init='first' is not one of ('first_batch', 'uniform').",
        ),
        (
            "softmatch",
            lambda s: setattr(s, "p_hat_init", "ones"),
            "loss.softmatch.p_hat_init='ones' is not one of ('first_batch', 'uniform').",
        ),
        (
            "debiased",
            lambda s: setattr(s, "update_order", "torchssl"),
            "loss.debiased.update_order='torchssl' is not one of ('paper', 'usb').",
        ),
    ],
)
def test_base_sections_are_checked_before_anything_runs(base, change, message):
    consistency = base if base in methods.names(methods.CONSISTENCY) else "uda"
    config = load_config("tiny", f"method={consistency}")
    change(config.loss[base])
    with pytest.raises(config_validation.ConfigError, match=re.escape(message)):
        config_validation.validate_config(config, num_devices=1)


# The bases with a method state. UDA has none (its TSA is a schedule of the step):
# a stateless method's resume is FixMatch's (test_train, the shared tiny run).
@pytest.mark.slow(heavy=True)
@pytest.mark.parametrize("base", STATEFUL)
def test_each_base_with_mi_stops_and_resumes_bit_identically(base, tmp_path):
    config = load_config("tiny", f"method={base}")
    assert config.loss.unsupervised == "iic"  # MUSCLE's MI term on top.
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    stopped = run_until_step(config, tmp_path / "b", stop_after=5)
    assert stopped == {"status": "preempted", "step": 5}
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert resumed["history"] == uninterrupted["history"]
    assert (
        resumed["train_history"]["consistency"][-1]
        == (uninterrupted["train_history"]["consistency"][-1])
    )
    states = [latest_state(tmp_path / name, config) for name in ("a", "b")]
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    state = jax.tree.map(np.asarray, states[0].method_state.get(base, {}))
    uniform = 1.0 / config.data.num_classes
    if base == "flexmatch":
        assert state["selected"].shape == (input_pipeline.dataset_info("digits").pool_size,)
        assert state["selected"].min() >= -1 and state["selected"].max() < 10
    elif base == "freematch":
        assert 0.0 < state["tau"] < 1.0 and state["tau"] != np.float32(uniform)
        np.testing.assert_allclose(state["p_tilde"].sum(), 1.0, rtol=1e-5)
    elif base == "softmatch":
        assert state["mu"] != np.float32(uniform) and state["var"] != np.float32(1.0)
    elif base == "adamatch":
        np.testing.assert_allclose(state["p_model"].sum(), 1.0, rtol=1e-5)
        assert np.any(state["p_model"] != np.float32(uniform))
    elif base == "dash":
        assert bool(state["initialised"]) and state["rho_init"] > 0
    else:
        assert base == "debiased"
        np.testing.assert_allclose(state["q_hat"].sum(), 1.0, rtol=1e-5)
        assert np.any(state["q_hat"] != np.float32(uniform))  # Moved off its start.
    assert methods.get(methods.CONSISTENCY, base).weighting["weight"] == 1.0


@pytest.mark.slow
def test_flexmatch_row_sharded_step_equals_one_device_step():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    config = load_config("tiny", "method=flexmatch")
    config.loss.flexmatch.threshold = 0.0  # Every image is recorded at every step.
    # A pool of 2000 (digits' 1497 + 503 unlabeled-only rows that no batch reads) is
    # row-sharded over 8 devices: the scatter writes into other devices' rows.
    info = dataclasses.replace(input_pipeline.dataset_info("digits"), num_unlabeled_only=503)
    batch = next(train.make_train_batches(config))
    results = {}
    for devices in (1, 8):
        mesh = train.make_mesh(jax.devices()[:devices])
        graphdef, state, tx = train.create_train_state(config, info)
        shardings = train.state_sharding(config, info, mesh)
        p_train, _ = train.compile_steps(graphdef, tx, config, mesh, shardings)
        state = jax.device_put(state, shardings)
        for _ in range(2):
            state, metrics = p_train(state, batch)
        results[devices] = (np.asarray(state.method_state["flexmatch"]["selected"]), metrics)
    selected = results[8][0]
    np.testing.assert_array_equal(selected, results[1][0])
    written = np.unique(np.asarray(batch["unlabeled_index"]))
    assert np.all(selected[written] >= 0)  # Each image of the batch got its pseudo-label...
    assert np.sum(selected >= 0) == len(written)  # ...and no other row was touched.
    np.testing.assert_allclose(
        results[8][1]["consistency"], results[1][1]["consistency"], rtol=2e-4
    )


def test_a_checkpoint_from_before_the_reference_randaugment_is_refused_saying_why():
    # Its run trained on the old Keras approximation: resuming would switch the
    # strong augmentation mid-run, so the refusal names the version and the reason.
    config = load_config("tiny")
    saved = json.loads(config.to_json())
    del saved["data"]["rand_augment_ops"]
    with pytest.raises(config_validation.ConfigError) as refused:
        config_validation.check_resume(saved, config, where="old")
    message = str(refused.value)
    assert "data.rand_augment_ops: None -> 3" in message
    assert "predates version 0.2.0" in message and "reference RandAugment" in message
    # A checkpoint that has the key gets no such note.
    saved["data"]["rand_augment_ops"] = 2
    with pytest.raises(config_validation.ConfigError) as refused:
        config_validation.check_resume(saved, config, where="old")
    assert "predates" not in str(refused.value)
