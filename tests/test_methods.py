"""The method registry: one definition per method, read by the trainer, pipeline and config.

The end-to-end tests run the tiny config on the embedded digits data over
the 8 simulated devices of conftest.py.
"""

import dataclasses
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from muscle_jax import (
    config_defaults,
    config_validation,
    input_pipeline,
    losses,
    methods,
    objective,
    train,
)
from muscle_jax.methods import tables

from .helpers import load_config
from .shared_runs import run_until_step
from .test_methods_bases import term_options
from .test_train import REPO, run_steps

# ---------------------------------------------------------------- a new method


def _entropy_minimisation(inputs, section, state):
    """A test-only unsupervised term: confident predictions on the weak view, with a counter."""
    probs = jax.nn.softmax(inputs.view_a_logits)
    entropy = -jnp.sum(probs * jnp.log(probs + 1e-8), axis=-1)
    return methods.TermResult(
        section.scale * jnp.mean(entropy),
        {"entropy": jnp.mean(entropy)},
        {"steps_seen": state["steps_seen"] + 1},
    )


ENTROPY = methods.Term(
    name="entropy_test",
    role=methods.UNSUPERVISED,
    loss=_entropy_minimisation,
    description="entropy minimisation (test only)",
    defaults={"scale": 0.5},
    unlabeled_views="weak_strong",
    init_state=lambda spec, section: {"steps_seen": jnp.zeros((), jnp.int32)},
)


@pytest.fixture
def entropy_method():
    methods.register(ENTROPY)
    yield ENTROPY
    methods.unregister(methods.UNSUPERVISED, ENTROPY.name)


@pytest.mark.slow
def test_a_new_method_is_one_definition_and_its_section(entropy_method, tmp_path):
    config = load_config("tiny", f"unsupervised={entropy_method.name}")
    assert config.loss.unsupervised == "entropy_test"
    assert config.loss.entropy_test.scale == 0.5  # Its section, with its defaults.
    config.total_steps = 4
    config.eval_every_steps = config.checkpoint_every_steps = 4
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 4
    checkpointer = train.checkpointing.Checkpointer(
        str(tmp_path / "checkpoints"), max_to_keep=2, read_only=True
    )
    _, template, _ = train.create_train_state(config, input_pipeline.dataset_info("digits"))
    state, _ = checkpointer.restore(template, expected=train.compatibility(config))
    # Its state was carried through every step and saved with the checkpoint.
    assert int(state.method_state["entropy_test"]["steps_seen"]) == 4
    assert np.isfinite(results["train_history"]["unsupervised"][-1])


def test_a_new_methods_section_is_validated_like_any_key(entropy_method):
    config = load_config("tiny", "unsupervised=entropy_test")
    config.lock()  # As main locks it.
    with pytest.raises(AttributeError):
        config.loss.entropy_test.scael = 1.0  # A typo is an error, not a silent new key.
    config.loss.unsupervised = "entropy_tset"
    with pytest.raises(config_validation.ConfigError, match=r"loss\.unsupervised=.entropy_tset."):
        config_validation.validate_config(config, num_devices=1)


def test_registering_a_taken_name_or_section_is_an_error(entropy_method):
    with pytest.raises(ValueError, match="already registered"):
        methods.register(ENTROPY)
    clash = dataclasses.replace(ENTROPY, role=methods.CONSISTENCY)
    with pytest.raises(ValueError, match=r"config section loss\.entropy_test"):
        methods.register(clash)


# ---------------------------------------------------------------- what methods imply


@pytest.mark.parametrize(
    "arg, views, labeled_views, teacher",
    [
        ("method=fixmatch", "weak_strong", 1, False),
        ("method=mse", "weak_weak", 1, False),
        ("method=mean_teacher", "weak_weak", 1, True),
        ("method=mixmatch", "weak_weak", 1, False),
        ("method=none", "weak_strong", 1, False),  # IIC still needs two views.
        ("method=none,mi=False", "none", 1, False),
        ("method=supervised", "none", 1, False),
        ("unsupervised=sdt", "weak_strong", 1, False),
        ("method=mse,unsupervised=mio", "weak_weak", 1, False),  # The base method decides.
    ],
)
def test_the_pipeline_and_the_trainer_ask_the_methods(arg, views, labeled_views, teacher):
    config = load_config("tiny", arg)
    assert methods.unlabeled_views(config) == views
    assert methods.labeled_views(config) == labeled_views
    assert methods.needs_teacher(config.loss) == teacher


def test_iic_on_labeled_asks_for_a_strong_labeled_view_and_mio_for_a_projector():
    config = load_config("tiny")
    config.loss.iic.on_labeled = True
    assert methods.labeled_views(config) == 2
    assert "labeled_strong" in next(train.make_train_batches(config))
    mio = load_config("tiny", "unsupervised=mio")
    assert methods.model_heads(mio.loss) == {"projector_dim": 16}
    model = train.build_model(mio, input_pipeline.dataset_info("digits"))
    assert model(jnp.zeros((2, 8, 8, 1)), train=False).projections.shape == (2, 16)
    # MIO keeps no method state: its projector is in the parameters, which resume as any.
    _, state, _ = train.create_train_state(mio, input_pipeline.dataset_info("digits"))
    assert state.method_state == {}
    assert any(
        "projector" in str(path) for path, _ in jax.tree_util.tree_leaves_with_path(state.params)
    )


@pytest.mark.parametrize(
    "arg",
    [
        "method=fixmatch",
        "method=mixmatch",
        "method=mean_teacher",
        "method=supervised",
        "unsupervised=sdt",
        "unsupervised=mio",
        "supervised=self_adaptive",
    ],
)
def test_every_method_reports_the_same_metric_keys(arg):
    config = load_config("tiny", arg)
    _, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 1)
    assert set(objective.METRIC_KEYS) <= set(metrics)
    for key in objective.METRIC_KEYS:
        assert np.isfinite(metrics[key]), key
    weights = (
        config.loss.supervised_weight * metrics["supervised"]
        + metrics["consistency_weight"] * metrics["consistency"]
        + metrics["unsupervised_weight"] * metrics["unsupervised"]
    )
    np.testing.assert_allclose(metrics["total"], weights, rtol=1e-6)


def _base_options(base: str, section, total_steps: int) -> dict:
    """The keyword options the trainer's term passes to its base's ``*_step``."""
    return term_options(methods.get(methods.CONSISTENCY, base), section, total_steps)


@pytest.mark.parametrize("consistency", ["fixmatch", *losses.STATEFUL_CONSISTENCY_KINDS])
def test_the_objective_equals_the_public_muscle_loss(consistency):
    """Each base + IIC through the trainer's objective is `losses.muscle_loss`, state included."""
    config = load_config("tiny", f"method={consistency}")
    config.model.overclustering_heads = 0
    batch = next(train.make_train_batches(config))
    info = input_pipeline.dataset_info("digits")
    graphdef, state, _ = train.create_train_state(config, info)
    from flax import nnx

    model = nnx.merge(graphdef, state.params, state.batch_stats)
    step = jnp.asarray(7)
    total, (metrics, new_state) = objective.compute_loss(
        model,
        batch,
        step=step,
        key=jax.random.key(0),
        loss_config=config.loss,
        num_classes=10,
        total_steps=config.total_steps,
        method_state=state.method_state,
    )
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    images = jnp.concatenate([batch["labeled"], batch["unlabeled_a"], batch["unlabeled_b"]])
    logits = model(images, train=True).logits
    sizes = np.cumsum([len(batch["labeled"]), len(batch["unlabeled_a"])])
    labeled, view_a, view_b = jnp.split(logits, sizes)
    weights = objective.term_weights(config.loss, step)
    if consistency == "fixmatch":
        options = {"threshold": config.loss.fixmatch.threshold}
    else:
        section = config.loss[consistency]
        options = {
            "consistency_state": state.method_state.get(consistency, {}),
            "consistency_options": _base_options(consistency, section, config.total_steps),
            "unlabeled_index": batch["unlabeled_index"],
            "step": step,
        }
    expected, aux = losses.muscle_loss(
        labeled,
        batch["label"],
        view_a,
        view_b,
        consistency=consistency,
        consistency_weight=weights["consistency"],
        mutual_information_weight=weights["unsupervised"],
        lamb=config.loss.iic.lamb,
        **options,
    )
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    for key in ("supervised", "consistency", "mutual_information", "mask_rate"):
        np.testing.assert_allclose(metrics[key], aux[key], rtol=1e-5, atol=1e-7, err_msg=key)
    if consistency in losses.STATEFUL_CONSISTENCY_KINDS:
        carried = new_state.get(consistency, {})
        assert jax.tree.structure(carried) == jax.tree.structure(aux["consistency_state"])
        for a, b in zip(jax.tree.leaves(carried), jax.tree.leaves(aux["consistency_state"])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- config


def test_the_docs_tables_are_written_from_the_registry():
    """docs/method.md's method tables are `methods.tables`' output: no hand-kept lists."""
    docs = (pathlib.Path(REPO) / "docs" / "method.md").read_text()
    role_table, section_table = tables.config_tables().strip().split("\n\n")
    assert role_table in docs and section_table in docs, (
        "Regenerate with: python -m muscle_jax.methods.tables"
    )
    for name in methods.names(methods.CONSISTENCY):
        assert f"`{name}`" in role_table


@pytest.mark.parametrize("config_name", ["digits", "mnist", "cifar10", "cifar100", "tiny"])
@pytest.mark.parametrize("unsupervised", ["iic", "sdt", "mio", "none"])
@pytest.mark.parametrize("supervised", ["cross_entropy", "self_adaptive"])
def test_every_config_takes_the_method_variants(config_name, unsupervised, supervised):
    config = load_config(config_name, f"unsupervised={unsupervised},supervised={supervised}")
    assert (config.loss.unsupervised, config.loss.supervised) == (unsupervised, supervised)
    config_validation.validate_config(config, num_devices=1)


def test_variants_select_terms_and_set_their_schedules():
    config = load_config("digits", "unsupervised=sdt,total_steps=60")
    assert config.loss.unsupervised == "sdt" and config.total_steps == 60
    adaptive = load_config("digits", "supervised=self_adaptive,total_steps=100")
    # The targets follow the predictions from 30 % of the run on, as the paper's E_s.
    assert adaptive.loss.self_adaptive.start_fraction == 0.3
    with pytest.raises(ValueError, match="mi=False drops the unsupervised term"):
        load_config("digits", "mi=False,unsupervised=sdt")
    with pytest.raises(ValueError, match=r"Unknown loss\.unsupervised=.sdtt."):
        load_config("digits", "unsupervised=sdtt")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c.loss.sdt, "k", 10), "loss.sdt.k=10"),
        (
            lambda c: (
                setattr(c.loss, "unsupervised", "mio"),
                setattr(c.loss.mio, "projector_dim", 0),
            ),
            "loss.mio.projector_dim=0",
        ),
        (lambda c: setattr(c.loss.self_adaptive, "momentum", 1.0), "momentum=1.0"),
        (
            lambda c: (setattr(c.loss, "unsupervised", "iic"), setattr(c.loss.iic, "lamb", 0.0)),
            "loss.iic.lamb=0.0",
        ),
        (lambda c: setattr(c.loss.fixmatch, "threshold", 1.5), "loss.fixmatch.threshold=1.5"),
        (lambda c: setattr(c.loss, "consistency", "mixmatch"), "trains the supervised term on"),
        (lambda c: setattr(c.data, "unlabeled_ratio", 0), "needs unlabeled images"),
    ],
)
def test_method_sections_are_checked_before_anything_runs(change, message):
    config = load_config("tiny", "supervised=self_adaptive,unsupervised=sdt")
    change(config)
    with pytest.raises(config_validation.ConfigError, match=message):
        config_validation.validate_config(config, num_devices=1)


@pytest.mark.slow
def test_an_old_flat_key_on_the_command_line_names_its_new_place(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "muscle_jax.main",
            "--config=configs/tiny.py",
            f"--workdir={tmp_path / 'run'}",
            "--config.num_labeled=20",
            "--config.loss.mi_weight=2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert "--config.num_labeled is now --config.data.num_labeled" in completed.stderr
    assert "--config.loss.mi_weight is now --config.loss.unsupervised_weight" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()


def test_every_moved_key_exists_at_its_new_place():
    config = config_defaults.base_config()
    for old, new in config_defaults.MOVED_KEYS.items():
        node = config
        for part in new.split("."):
            node = node[part]
        with pytest.raises((AttributeError, KeyError)):
            node = config
            for part in old.split("."):
                node = node[part]


# ---------------------------------------------------------------- the related methods


# The methods with state; the stateless default (FixMatch + IIC) resumes in
# test_train.py, and MIO's only addition, its projector, is ordinary parameters.
@pytest.mark.slow(heavy=True)
@pytest.mark.parametrize("arg", ["unsupervised=sdt", "supervised=self_adaptive"])
def test_related_method_stops_and_resumes_bit_identically(arg, tmp_path):
    config = load_config("tiny", arg)
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    stopped = run_until_step(config, tmp_path / "b", stop_after=5)
    assert stopped == {"status": "preempted", "step": 5}
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert resumed["history"] == uninterrupted["history"]
    final = {}
    for name in ("a", "b"):
        checkpointer = train.checkpointing.Checkpointer(
            str(tmp_path / name / "checkpoints"), max_to_keep=2, read_only=True
        )
        _, template, _ = train.create_train_state(config, input_pipeline.dataset_info("digits"))
        final[name], _ = checkpointer.restore(template, expected=train.compatibility(config))
    for a, b in zip(jax.tree.leaves(final["a"]), jax.tree.leaves(final["b"]), strict=True):
        np.testing.assert_array_equal(a, b)
    method_state = final["a"].method_state
    if arg == "unsupervised=sdt":
        # Homeostasis moved the thresholds away from their initial zeros.
        assert np.any(np.asarray(method_state["sdt"]["thresholds"]) != 0)
    elif arg == "supervised=self_adaptive":
        targets = np.asarray(method_state["self_adaptive"]["targets"])
        written = targets[targets.sum(-1) > 0]
        assert len(written) > 0
        np.testing.assert_allclose(written.sum(-1), 1.0, rtol=1e-5)
        # After the start step the targets moved off the one-hot labels.
        assert np.any((written > 0) & (written < 1))


def test_self_adaptive_targets_are_sharded_over_the_devices():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    config = load_config("tiny", "supervised=self_adaptive")
    info = dataclasses.replace(input_pipeline.dataset_info("digits"), num_train=1496)
    mesh = train.make_mesh()
    shardings = train.state_sharding(config, info, mesh)
    targets = shardings.method_state["self_adaptive"]["targets"]
    assert targets.spec == jax.sharding.PartitionSpec("data")
    odd = dataclasses.replace(info, num_train=1497)  # Not divisible by 8: replicated.
    spec = train.state_sharding(config, odd, mesh).method_state["self_adaptive"]["targets"].spec
    assert spec == jax.sharding.PartitionSpec()


@pytest.mark.slow
def test_self_adaptive_sharded_step_equals_one_device_step():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    config = load_config("tiny", "supervised=self_adaptive")
    config.loss.self_adaptive.start_fraction = 0.0  # Update the targets from the first step.
    info = input_pipeline.dataset_info("digits")
    batch = next(train.make_train_batches(config))
    results = {}
    for devices in (1, 8):
        mesh = train.make_mesh(jax.devices()[:devices])
        spec = dataclasses.replace(info, num_train=1496)  # Divisible by 8: rows sharded.
        graphdef, state, tx = train.create_train_state(config, spec)
        shardings = train.state_sharding(config, spec, mesh)
        p_train, _ = train.compile_steps(graphdef, tx, config, mesh, shardings)
        state = jax.device_put(state, shardings)
        for _ in range(2):
            state, metrics = p_train(state, batch)
        results[devices] = (state, metrics)
    np.testing.assert_allclose(results[8][1]["supervised"], results[1][1]["supervised"], rtol=2e-4)
    np.testing.assert_allclose(
        results[8][0].method_state["self_adaptive"]["targets"],
        results[1][0].method_state["self_adaptive"]["targets"],
        rtol=2e-4,
        atol=1e-6,
    )


def test_config_sections_are_what_the_modules_take():
    config = load_config("tiny")
    assert isinstance(config.data, ml_collections.ConfigDict)
    stream = input_pipeline.training(
        config.data, seed=0, unlabeled_views="weak_strong", labeled_views=1
    )
    batch = next(stream)
    assert batch["labeled"].shape[0] == config.data.batch_size
    assert batch["unlabeled_a"].shape[0] == config.data.batch_size * config.data.unlabeled_ratio
    evaluation = list(input_pipeline.evaluation(config.data))
    assert sum(int(b["mask"].sum()) for b in evaluation) == 300
