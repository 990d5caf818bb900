"""Label noise on the labeled set (muscle_jax/data/label_noise.py): draw, pipeline, record.

The draw is checked exactly (how many labels change, which classes they go
to, that a seed gives one answer); the pipeline test reads the labels the
training iterator yields and the held-out sets without training; results.json
is checked on the SDT test's digits run (tests/test_sdt_recipe.py), which
trains with label noise on so that one short run serves both.
"""

import re

import numpy as np
import pytest

from muscle_jax import config_validation
from muscle_jax import input_pipeline as ip
from muscle_jax.data import digits, label_noise, splits
from tests import cli_driver
from tests.helpers import DIGITS_STREAM, load_config

# 10 classes, 30 examples each, in a shuffled order.
LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(10), 30))


def _noisy(fraction, kind="symmetric", seed=0, dataset="digits", labels=LABELS, classes=10):
    return label_noise.noisy_labels(
        labels, fraction=fraction, kind=kind, seed=seed, num_classes=classes, dataset=dataset
    )


@pytest.mark.parametrize("fraction, changed", [(0.2, 60), (0.4, 120), (0.1, 30), (0.005, 2)])
def test_symmetric_changes_exactly_the_fraction_and_never_keeps_a_label(fraction, changed):
    noisy = _noisy(fraction)
    wrong = noisy != LABELS
    # floor(fraction * 300 + 0.5): 1.5 rounds up to 2.
    assert wrong.sum() == changed
    assert noisy.dtype == np.int64 and noisy.shape == LABELS.shape
    assert ((noisy >= 0) & (noisy < 10)).all()


def test_symmetric_draws_every_other_class_and_only_those():
    # Over many draws, a corrupted label of class c takes each of the 9 others about
    # equally often and c never.
    labels = np.zeros(2000, np.int64)
    noisy = _noisy(0.9, labels=labels, classes=4)
    counts = np.bincount(noisy[noisy != 0], minlength=4)
    assert counts[0] == 0 and counts.sum() == 1800
    assert counts[1:].min() > 1800 / 3 * 0.85  # A 15 % band around the uniform 600.


def test_the_draw_is_a_function_of_the_seed_alone():
    first, again = _noisy(0.3, seed=5), _noisy(0.3, seed=5)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, _noisy(0.3, seed=6))
    # A larger fraction is drawn afresh, not as a superset: only its size is fixed.
    assert (_noisy(0.4, seed=5) != LABELS).sum() == 120
    np.testing.assert_array_equal(_noisy(0.0), LABELS)


def test_asymmetric_on_cifar10_flips_the_self_adaptive_training_pairs():
    noisy = _noisy(0.4, kind="asymmetric", dataset="cifar10")
    pairs = set(zip(LABELS[noisy != LABELS].tolist(), noisy[noisy != LABELS].tolist()))
    # truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
    assert pairs == {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}
    for cls in (9, 2, 4, 3, 5):  # 40 % of each flipped class's 30 examples.
        assert ((LABELS == cls) & (noisy != LABELS)).sum() == 12
    for cls in (0, 1, 6, 7, 8):
        assert (noisy[LABELS == cls] == cls).all()
    assert label_noise.flip_map(10, "cifar10").tolist() == [0, 1, 0, 5, 7, 3, 6, 7, 8, 1]


def test_asymmetric_elsewhere_is_the_next_class():
    noisy = _noisy(0.2, kind="asymmetric", dataset="digits")
    wrong = noisy != LABELS
    np.testing.assert_array_equal(noisy[wrong], (LABELS[wrong] + 1) % 10)
    assert np.bincount(LABELS[wrong], minlength=10).tolist() == [6] * 10
    # CIFAR-10's pairs only for CIFAR-10's 10 classes.
    assert label_noise.flip_map(3, "cifar10").tolist() == [1, 2, 0]


@pytest.mark.parametrize(
    "fraction, kind, fragment",
    [(1.0, "symmetric", "[0, 1)"), (-0.1, "symmetric", "[0, 1)"), (0.2, "pairs", "kind")],
)
def test_bad_requests_raise(fraction, kind, fragment):
    with pytest.raises(ip.DataRequestError, match=re.escape(fragment)):
        _noisy(fraction, kind=kind)


def test_describe_lists_every_change():
    indices = np.arange(100, 400)
    noisy = _noisy(0.2)
    record = label_noise.describe(
        indices, LABELS, noisy, fraction=0.2, kind="symmetric", num_classes=10, dataset="digits"
    )
    changed = np.flatnonzero(noisy != LABELS)
    assert record["num_changed"] == 60 and record["realised_rate"] == 0.2
    assert record["changed"]["indices"] == (changed + 100).tolist()
    assert record["changed"]["original"] == LABELS[changed].tolist()
    assert record["changed"]["noisy"] == noisy[changed].tolist()
    assert record["flips"] is None and record["num_labeled"] == 300


# ---------------------------------------------------------------- the pipeline


def test_training_labels_are_noisy_and_nothing_else_is():
    stream = {**DIGITS_STREAM, "num_labeled": 100}
    source = ip.sources.open_source("digits")
    config = load_config("digits", "num_labeled=100,seed=3")
    config.data.label_noise = 0.3
    config.data.num_validation = 5
    record = ip.label_noise_record(config.data, source=source, seed=3)
    assert record["num_changed"] == 30 and record["realised_rate"] == 0.3
    noisy_of = dict(zip(record["changed"]["indices"], record["changed"]["noisy"]))
    true = source.train_labels()
    iterator = ip.make_train_iterator(
        source,
        process_count=1,
        process_index=0,
        label_noise=0.3,
        num_validation=5,
        **{**stream, "seed": 3},
    )
    seen = {}
    for _ in range(30):  # 240 labeled draws: every one of the 100 labeled examples.
        batch = next(iterator)
        for index, label in zip(batch["labeled_index"].tolist(), batch["label"].tolist()):
            seen[index] = label
    assert len(seen) == 100
    for index, label in seen.items():
        assert label == noisy_of.get(index, true[index]), index
    assert sum(label != true[index] for index, label in seen.items()) == 30
    # The validation and test sets keep their labels.
    _, labels = ip.validation_examples(config.data, source=source, seed=3)
    held_out = splits.select_validation_indices(true, num_per_class=5, seed=3, num_classes=10)
    np.testing.assert_array_equal(labels, true[held_out])
    assert not set(noisy_of) & set(held_out.tolist())
    test_labels = np.concatenate(
        [b["label"][b["mask"]] for b in ip.evaluation(config.data, source=source)]
    )
    np.testing.assert_array_equal(test_labels, digits.load()[3])


# ---------------------------------------------------------------- the config


def test_invalid_noise_settings_are_named():
    config = load_config("digits")
    config.data.label_noise = 1.0
    config.data.label_noise_kind = "pairs"
    with pytest.raises(config_validation.ConfigError) as info:
        config_validation.validate_config(config, num_devices=1)
    message = str(info.value)
    assert "data.label_noise=1.0 must be in [0, 1)" in message
    assert "data.label_noise_kind='pairs' is not one of ('symmetric', 'asymmetric')" in message


def test_a_checkpoint_from_before_label_noise_resumes_as_noise_free():
    config = load_config("digits")
    saved = config.to_dict()
    del saved["data"]["label_noise"], saved["data"]["label_noise_kind"]
    fixed, _ = config_validation.resume_changes(saved, config.to_dict())
    assert fixed == []
    config.data.label_noise = 0.2
    fixed, _ = config_validation.resume_changes(saved, config.to_dict())
    assert fixed == ["data.label_noise: 0.0 -> 0.2"]


def test_main_refuses_bad_noise_in_one_line_before_the_workdir(tmp_path):
    workdir = tmp_path / "run"
    (outcome,) = cli_driver.run_command_lines(
        "muscle_jax.main",
        [
            [
                "--config=configs/digits.py",
                f"--workdir={workdir}",
                "--config.data.label_noise=1.5",
            ]
        ],
    )
    assert outcome.returncode == 2, outcome
    assert "data.label_noise=1.5 must be in [0, 1)" in outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert not workdir.exists()
