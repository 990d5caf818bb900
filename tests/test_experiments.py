"""The experiment suites: which runs they make, their statistics and files, the CLI.

Unit tests build suites from the shipped configs and write results.json files
by hand, so the tables are checked against hand-computed numbers. Every
suite then runs through the real command line with a fake trainer
(tests/fake_trainer.py, no training: `--trainer=tests.fake_trainer`), which
checks the suites' bookkeeping in seconds. One slow test uses the real
trainer on tiny digits runs: a suite killed mid-way, resumed and reported.
"""

import csv
import dataclasses
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from muscle_jax.experiments import dispatch, help_text, plots, results, statistics, suites, tables
from muscle_jax.experiments.suites import common
from tests import cli_driver
from tests.helpers import load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
FAKE_TRAINER = "tests.fake_trainer"
SHORT = [
    "--config.total_steps=4",
    "--config.eval_every_steps=2",
    "--config.checkpoint_every_steps=2",
]


def _experiments(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "muscle_jax.experiments", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        **kwargs,
    )


# ------------------------------------------------------------------ statistics


def test_paired_difference_matches_hand_computed_t_interval():
    muscle = {0: 0.90, 1: 0.80, 2: 0.85, 7: 0.5}  # seed 7 has no partner: left out.
    base = {0: 0.85, 1: 0.80, 2: 0.80}
    difference = statistics.paired_difference(muscle, base)
    # Differences 0.05, 0, 0.05: mean 1/30, sd 0.028868, t_{0.975, 2} = 4.302653.
    half = 4.302653 * 0.0288675 / math.sqrt(3)
    assert difference.n == 3 and difference.seeds == (0, 1, 2)
    assert difference.mean == pytest.approx(1 / 30)
    assert difference.low == pytest.approx(1 / 30 - half, abs=1e-6)
    assert difference.high == pytest.approx(1 / 30 + half, abs=1e-6)
    assert not difference.excludes_zero
    assert difference.format() == "+3.3 [-3.8, +10.5]"


def test_summary_and_edge_cases():
    summary = statistics.summarise([0.9, 0.8, 0.85])
    assert (summary.mean, summary.n) == (pytest.approx(0.85), 3)
    assert summary.std == pytest.approx(0.05)
    assert summary.format() == "85.0 ± 5.0"
    assert statistics.summarise([0.5]).format() == "50.0 (n=1)"
    assert statistics.summarise([]).format() == "–"
    one = statistics.paired_difference({0: 0.6}, {0: 0.5})
    assert one.n == 1 and math.isnan(one.low) and one.format() == "+10.0 (n=1, no interval)"
    assert statistics.paired_difference({0: 0.6}, {1: 0.5}).format() == "–"
    clear = statistics.paired_difference({0: 0.9, 1: 0.91, 2: 0.9}, {0: 0.8, 1: 0.8, 2: 0.81})
    assert clear.excludes_zero


# ------------------------------------------------------------------ suites


def test_a_suite_needs_the_class_count_before_any_run_opens_the_data():
    config = load_config("image_folder")  # data.num_classes=0: the data's, unknown here.
    with pytest.raises(suites.SuiteError, match=r"give --config\.data\.num_classes=N"):
        suites.build("label_sweep", config, suites.SuiteOptions(), pinned=[])
    config.data.num_classes = 3
    counts = {
        dict(run.overrides)["data.num_labeled"]
        for run in suites.build("label_sweep", config, suites.SuiteOptions(), pinned=[])
    }
    assert "0" not in counts  # 0 would label every image: never a swept count.


def test_label_sweep_defaults_suit_the_dataset():
    config = load_config("digits")
    runs = suites.build("label_sweep", config, suites.SuiteOptions(), pinned=[])
    assert len(runs) == 4 * 3 * 4  # label counts x seeds x arms
    assert len({run.name for run in runs}) == len(runs)
    counts = sorted({dict(run.overrides)["data.num_labeled"] for run in runs}, key=int)
    assert counts == ["10", "20", "40", "100"]
    arms = {run.arm: (run.method, run.mi) for run in runs}
    assert arms == {
        "muscle": ("fixmatch", True),
        "base": ("fixmatch", False),
        "supervised_mi": ("none", True),
        "supervised": ("supervised", False),
    }
    assert runs[0].name == "10_labels/muscle/seed_0"
    # CIFAR-100's default sweep is 1, 2, 4, 10 labels a class too.
    c100 = suites.build("label_sweep", load_config("cifar100"), suites.SuiteOptions(), pinned=[])
    assert sorted({int(dict(r.overrides)["data.num_labeled"]) for r in c100}) == [
        100,
        200,
        400,
        1000,
    ]


def test_bias_picks_the_smallest_label_count_that_gives_every_class_a_label():
    from muscle_jax.data import splits

    runs = suites.build("bias", load_config("digits"), suites.SuiteOptions(seeds=(0,)), pinned=[])
    count = int(dict(runs[0].overrides)["data.num_labeled"])
    assert {run.setting for run in runs} == {"ratio 1", "ratio 10", "ratio 100"}
    assert splits.per_class_counts(count, 10, imbalance_ratio=100).min() >= 1
    with pytest.raises(ValueError):
        splits.per_class_counts(count - 10, 10, imbalance_ratio=100)
    assert count >= load_config("digits").data.num_labeled


def test_bias_runs_the_imbalance_aware_bases_and_long_tailed_unlabeled_pools(tmp_path):
    options = suites.SuiteOptions(
        seeds=(0,),
        imbalance_ratios=(1.0, 10.0),
        arms=("muscle", "base", "debiased", "debiased_mi", "freematch_mi", "abc", "abc_mi"),
        unlabeled=("balanced", "same", "reversed"),
    )
    runs = suites.build("bias", load_config("digits"), options, pinned=[])
    # A ratio of 1 leaves the pool as it is: only its balanced setting is run.
    assert list(dict.fromkeys(run.setting for run in runs)) == [
        "ratio 1",
        "ratio 10",
        "ratio 10, unlabeled same",
        "ratio 10, unlabeled reversed",
    ]
    assert len(runs) == 4 * 7
    pools = {run.setting: dict(run.overrides).get("data.unlabeled_imbalance_ratio") for run in runs}
    assert pools == {
        "ratio 1": None,  # The default pool: no override, as earlier suite runs had.
        "ratio 10": None,
        "ratio 10, unlabeled same": "10.0",
        "ratio 10, unlabeled reversed": "-10.0",
    }
    methods_of = {run.arm: (run.method, run.mi) for run in runs}
    assert methods_of["debiased"] == ("debiased", False)
    assert methods_of["debiased_mi"] == ("debiased", True)
    assert methods_of["freematch_mi"] == ("freematch", True)
    assert methods_of["muscle"] == ("fixmatch", True)
    # ABC goes on the config's base as the add-on variant, alone and with MI.
    addons = {run.arm: (run.method, run.mi, run.addon) for run in runs}
    assert addons["abc"] == ("fixmatch", False, "abc")
    assert addons["abc_mi"] == ("fixmatch", True, "abc")
    assert addons["muscle"][2] == ""
    invocation = _invocation(tmp_path)
    abc_run = next(run for run in runs if run.arm == "abc_mi")
    assert invocation.config_flag(abc_run) == (
        "configs/digits.py:num_labeled=50,method=fixmatch,mi=True,addon=abc"
    )
    # A finished run from before the add-on role (its config has no loss.addon) is not ABC's.
    no_abc = {"config": load_config("digits", "num_labeled=50,method=fixmatch").to_dict()}
    del no_abc["config"]["loss"]["addon"]
    with pytest.raises(dispatch.DispatchError, match=r"loss.addon='none' \(asked: abc\)"):
        dispatch.check_finished_run(invocation, abc_run, no_abc)
    with pytest.raises(suites.SuiteError, match="--unlabeled=sorted: choose from balanced"):
        suites.build(
            "bias",
            load_config("digits"),
            dataclasses.replace(options, unlabeled=("sorted",)),
            pinned=[],
        )


def test_the_bias_report_pairs_each_imbalance_aware_base_with_its_mi():
    runs = suites.build(
        "bias",
        load_config("digits"),
        suites.SuiteOptions(
            seeds=(0, 1), imbalance_ratios=(10.0,), arms=("debiased", "debiased_mi")
        ),
        pinned=[],
    )
    outcomes = []
    for run in runs:  # debiased + MI two points ahead at both seeds.
        value = 0.80 + 0.01 * run.seed + 0.02 * run.mi
        run_results = {
            "accuracy": value,
            "per_class_accuracy": [value] * 10,
            "run": {"wall_seconds": 1.0},
            "config": {"data": {"name": "digits"}},
        }
        outcomes.append(results.Outcome(run, run_results))
    text = results.markdown("bias", outcomes, base="fixmatch", command="c", default_mi_weight=1.0)
    assert "debiased pseudo-labelling + MI − debiased pseudo-labelling" in text
    assert "+2.0 [+2.0, +2.0]" in text


def test_the_report_counts_classes_lost_per_run_setting_and_arm():
    runs = suites.build(
        "label_sweep",
        load_config("digits"),
        suites.SuiteOptions(seeds=(0, 1, 2), label_counts=(20,), arms=("muscle", "base")),
        pinned=[],
    )
    # MUSCLE loses class 3 at seed 1 (recall 0.2) and classes 3 and 4 at seed 2; a recall
    # of exactly 0.3 is not lost. The base loses nothing; its seed 2 has not finished.
    lost = {("muscle", 1): {3: 0.2}, ("muscle", 2): {3: 0.0, 4: 0.1}, ("base", 0): {5: 0.3}}
    outcomes = []
    for run in runs:
        per_class = [0.9] * 10
        for k, value in lost.get((run.arm, run.seed), {}).items():
            per_class[k] = value
        finished = not (run.arm == "base" and run.seed == 2)
        run_results = {
            "accuracy": 0.8,
            "raw_accuracy": 0.8,
            "final_accuracy": 0.8,
            "steps": 10,
            "per_class_accuracy": per_class,
            "run": {"wall_seconds": 1.0},
            "config": {"data": {"name": "digits"}},
        }
        outcomes.append(results.Outcome(run, run_results if finished else None))
    counted = {(row["arm"], row["seed"]): row["classes_lost"] for row in results.csv_rows(outcomes)}
    assert counted == {
        ("muscle", 0): 0,
        ("muscle", 1): 1,
        ("muscle", 2): 2,
        ("base", 0): 0,
        ("base", 1): 0,
        ("base", 2): "",
    }
    text = results.markdown(
        "label_sweep", outcomes, base="fixmatch", command="c", default_mi_weight=1.0
    )
    assert "| setting | MUSCLE (fixmatch + MI) | fixmatch |" in text
    assert "| 20 labels | lost: 3 classes in 2/3 runs | lost: 0 classes in 0/2 runs |" in text


def test_finetune_runs_start_from_their_seeds_pretraining():
    config = load_config("digits")
    runs = suites.build("finetune", config, suites.SuiteOptions(seeds=(0, 1)), pinned=[])
    by_arm = {(run.arm, run.seed): run for run in runs}
    pretrain = by_arm[(suites.finetune.PRETRAIN, 1)]
    assert dict(pretrain.overrides)["loss.supervised_weight"] == "0.0"
    assert dict(pretrain.overrides)["total_steps"] == "750"
    tuned = by_arm[(suites.finetune.FINETUNE_SUPERVISED, 1)]
    assert tuned.stage == 1 and tuned.method == "supervised"
    assert dict(tuned.overrides)["init_from"] == "{workdir}/finetune/pretrain/seed_1/checkpoints"
    assert dict(tuned.overrides)["total_steps"] == "750"
    assert dict(by_arm[(suites.finetune.SCRATCH_MUSCLE, 1)].overrides)["total_steps"] == "1500"
    # The user's total_steps is split, not refused.
    assert suites.build("finetune", config, suites.SuiteOptions(), pinned=["total_steps"])


def test_bases_runs_each_base_alone_and_with_mi_at_two_label_counts():
    runs = suites.build("bases", load_config("digits"), suites.SuiteOptions(), pinned=[])
    bases = ("fixmatch", "flexmatch", "freematch", "softmatch", "adamatch", "uda", "dash")
    assert suites.bases.default_bases() == bases
    assert len(runs) == len(bases) * 2 * 3 * 2  # bases x label counts x seeds x arms
    assert len({run.name for run in runs}) == len(runs)
    assert {(run.method, run.mi) for run in runs if run.arm == "muscle"} == {
        (base, True) for base in bases
    }
    assert {run.method for run in runs if run.arm == "base" and not run.mi} == set(bases)
    counts = sorted({int(dict(run.overrides)["data.num_labeled"]) for run in runs})
    assert counts == [10, 40]  # 1 and 4 labels a class.
    assert runs[0].name == "fixmatch_at_10_labels/muscle/seed_0"
    invocation = _invocation(pathlib.Path("/suite"))
    assert invocation.config_flag(runs[1]).endswith("method=fixmatch,mi=False")


def test_mi_ablation_flips_one_knob_at_a_time():
    config = load_config("digits")
    runs = suites.build("mi_ablation", config, suites.SuiteOptions(seeds=(5,)), pinned=[])
    settings = [(run.setting, run.arm, run.overrides[2:]) for run in runs]
    assert settings == [
        ("mi_weight=0", "base", (("loss.unsupervised_weight", "0.0"),)),
        ("mi_weight=0.1", "muscle", (("loss.unsupervised_weight", "0.1"),)),
        ("mi_weight=0.3", "muscle", (("loss.unsupervised_weight", "0.3"),)),
        ("mi_weight=1", "muscle", (("loss.unsupervised_weight", "1.0"),)),
        ("mi_weight=3", "muscle", (("loss.unsupervised_weight", "3.0"),)),
        ("mi_rampup_steps=375", "muscle", (("loss.unsupervised_rampup_steps", "375"),)),
        ("lamb=2", "muscle", (("loss.iic.lamb", "2.0"),)),
        ("overclustering_heads=1", "muscle", (("model.overclustering_heads", "1"),)),
        ("mi_on_labeled=True", "muscle", (("loss.iic.on_labeled", "True"),)),
    ]
    assert all(dict(run.overrides)["data.num_labeled"] == "20" for run in runs)
    some = suites.build(
        "mi_ablation",
        config,
        suites.SuiteOptions(seeds=(0,), knobs=("lamb",), mi_weights=(0.0,)),
        pinned=[],
    )
    # The base and the config's MUSCLE are always run: the rows are compared with them.
    default = f"mi_weight={config.loss.unsupervised_weight:g}"  # 3 for digits.
    assert [run.setting for run in some] == ["mi_weight=0", default, "lamb=2"]


@pytest.mark.parametrize(
    "suite, options, pinned, message",
    [
        ("sweep", suites.SuiteOptions(), [], "Unknown suite 'sweep'"),
        (
            "label_sweep",
            suites.SuiteOptions(),
            ["data.num_labeled"],
            "--config.data.num_labeled is what",
        ),
        ("label_sweep", suites.SuiteOptions(arms=("muscle", "mixup")), [], "Unknown arm"),
        ("label_sweep", suites.SuiteOptions(label_counts=(15,)), [], "Label count 15"),
        ("label_sweep", suites.SuiteOptions(seeds=(1, 1)), [], "repeats a seed"),
        ("bias", suites.SuiteOptions(imbalance_ratios=(0.5,)), [], "must be >= 1"),
        ("bias", suites.SuiteOptions(label_counts=(20,)), [], "smallest class would get no"),
        ("finetune", suites.SuiteOptions(label_counts=(10, 20)), [], "one label count"),
        ("mi_ablation", suites.SuiteOptions(knobs=("tau",)), [], "Unknown knob"),
        ("bases", suites.SuiteOptions(bases=("fixmatch", "remixmatch")), [], "Unknown base"),
        ("noise", suites.SuiteOptions(noise_levels=(0.2, 1.0)), [], "must lie in [0, 1)"),
        ("noise", suites.SuiteOptions(noise_levels=(0.2, 0.2)), [], "repeats a level"),
        ("noise", suites.SuiteOptions(noise_kind="pairs"), [], "choose one of symmetric"),
        ("noise", suites.SuiteOptions(label_counts=(10, 20)), [], "one label count"),
        ("noise", suites.SuiteOptions(arms=("muscle", "mixup")), [], "Unknown arm"),
        ("noise", suites.SuiteOptions(), ["data.label_noise"], "--config.data.label_noise is"),
        (
            "mi_ablation",
            suites.SuiteOptions(),
            ["loss.unsupervised_weight"],
            "--config.loss.unsupervised_weight",
        ),
    ],
)
def test_bad_suite_options_are_refused_with_the_fix(suite, options, pinned, message):
    with pytest.raises(suites.SuiteError, match=re.escape(message)):
        suites.build(suite, load_config("digits"), options, pinned=pinned)


def test_a_config_without_a_consistency_method_is_refused():
    config = load_config("digits", "method=supervised")
    with pytest.raises(suites.SuiteError, match="method=fixmatch"):
        suites.build("label_sweep", config, suites.SuiteOptions(), pinned=[])


def test_objectives_swaps_one_term_on_the_base_method(tmp_path):
    config = load_config("digits")
    runs = suites.build("objectives", config, suites.SuiteOptions(seeds=(0, 1)), pinned=[])
    assert [run.arm for run in runs[:5]] == ["base", "iic", "sdt", "mio", "self_adaptive"]
    assert len(runs) == 10 and {run.method for run in runs} == {"fixmatch"}
    invocation = _invocation(tmp_path)
    flags = {run.arm: invocation.config_flag(run) for run in runs[:5]}
    assert flags["base"].endswith(
        "method=fixmatch,mi=False,unsupervised=none,supervised=cross_entropy"
    )
    assert flags["mio"].endswith(
        "method=fixmatch,mi=True,unsupervised=mio,supervised=cross_entropy"
    )
    assert flags["self_adaptive"].endswith("mi=False,unsupervised=none,supervised=self_adaptive")
    for run in runs:
        variant = invocation.config_flag(run).split(":", 1)[1]
        built = load_config("digits", variant)
        arm = suites.get("objectives").arm(run.arm)
        assert (built.loss.unsupervised, built.loss.supervised) == (
            arm.unsupervised,
            arm.supervised,
        )
        assert dict(run.overrides)["data.num_labeled"] == "20"
    # A finished SDT run is not taken for the MIO arm.
    _fake_results(invocation, runs[2], 0.9, [0.9] * 10)
    results_json = json.loads((tmp_path / runs[2].name / "results.json").read_text())
    with pytest.raises(dispatch.DispatchError, match=r"loss.unsupervised='sdt' \(asked: mio\)"):
        dispatch.check_finished_run(invocation, runs[3], results_json)


def test_noise_crosses_the_supervised_term_with_mi_at_each_noise_level(tmp_path):
    config = load_config("digits")
    runs = suites.build("noise", config, suites.SuiteOptions(seeds=(0, 1)), pinned=[])
    assert len(runs) == 3 * 2 * 4  # levels x seeds x arms
    assert [run.arm for run in runs[:4]] == [arm.name for arm in suites.get("noise").arms]
    assert [run.setting for run in runs[::8]] == ["noise 0", "noise 0.2", "noise 0.4"]
    assert runs[8].name == "noise_0.2/base/seed_0"
    invocation = _invocation(tmp_path)
    for run in runs:
        overrides = dict(invocation.run_overrides(run))
        assert overrides["data.num_labeled"] == "100"  # 10 labels a class.
        assert overrides["data.label_noise"] == str(float(run.setting.split()[1]))
        assert overrides["data.label_noise_kind"] == "symmetric"
        built = load_config("digits", invocation.config_flag(run).split(":", 1)[1])
        arm = suites.get("noise").arm(run.arm)
        mi, supervised = arm.mi, arm.supervised
        assert built.loss.consistency == "fixmatch" and built.loss.supervised == supervised
        assert built.loss.unsupervised == ("iic" if mi else "none")
    # A finished cross-entropy run is not taken for the self-adaptive arm.
    _fake_results(invocation, runs[0], 0.9, [0.9] * 10)
    written = json.loads((tmp_path / runs[0].name / "results.json").read_text())
    with pytest.raises(dispatch.DispatchError, match=r"loss.supervised='cross_entropy'"):
        dispatch.check_finished_run(invocation, runs[1], written)
    asymmetric = suites.build(
        "noise",
        config,
        suites.SuiteOptions(
            seeds=(0,), noise_levels=(0.3,), noise_kind="asymmetric", label_counts=(50,)
        ),
        pinned=[],
    )
    assert {run.setting for run in asymmetric} == {"noise 0.3, asymmetric"}
    assert dict(asymmetric[0].overrides)["data.label_noise_kind"] == "asymmetric"
    assert dict(asymmetric[0].overrides)["data.num_labeled"] == "50"


def test_noise_report_pairs_self_adaptive_with_cross_entropy_at_each_level(tmp_path):
    runs = suites.build(
        "noise", load_config("digits"), suites.SuiteOptions(noise_levels=(0.0, 0.4)), pinned=[]
    )
    invocation = _invocation(tmp_path)
    # Per arm, the accuracy at seeds 0, 1, 2 (noise 0 adds 0.05 to every arm).
    accuracy = {
        "base": [0.80, 0.70, 0.75],
        "self_adaptive": [0.85, 0.70, 0.80],
        "muscle": [0.90, 0.80, 0.80],
        "muscle_self_adaptive": [0.90, 0.85, 0.85],
    }
    for run in runs:
        clean = 0.05 if run.setting == "noise 0" else 0.0
        _fake_results(invocation, run, accuracy[run.arm][run.seed] + clean, [0.9] * 10)
    outcomes = results.collect(runs, str(tmp_path))
    results.write(
        str(tmp_path), "noise", outcomes, base="fixmatch", command="cmd", default_mi_weight=3.0
    )
    rows = _csv(tmp_path)
    assert {row["label_noise"] for row in rows} == {"0", "0.4"}
    assert {row["label_noise_kind"] for row in rows} == {"symmetric"}
    text = (tmp_path / "results.md").read_text()
    # SAT - CE: 0.05, 0, 0.05 (the statistics test's +3.3 [-3.8, +10.5]); with MI:
    # 0, 0.05, 0.05, the same; MUSCLE - base: 0.1, 0.1, 0.05, mean 1/12 with the same
    # sd, so the same half-width (7.2 points) around +8.3.
    assert (
        "| noise 0.4 | 75.0 ± 5.0 | 78.3 ± 7.6 | 83.3 ± 5.8 | 86.7 ± 2.9 "
        "| +3.3 [-3.8, +10.5] | +3.3 [-3.8, +10.5] | +8.3 [+1.2, +15.5] |"
    ) in text
    assert "| noise 0 | 80.0 ± 5.0 | 83.3 ± 7.6 |" in text
    assert "self-adaptive training − fixmatch (95 % CI)" in text
    # The fake results carry no label_noise record: said so, not invented.
    assert "Realised noise rates (results.json's `label_noise`): noise 0: –; noise 0.4: –." in text
    assert (tmp_path / "accuracy_vs_noise.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ registry


def _own_suite(**changes):
    """A suite of one's own, all in one record: two arms at 20 labels, its own column and plot."""

    def build(suite, config, options, base):
        runs = common.label_count_runs(suite.name, 20, options, suite.chosen_arms(options), base)
        return [dataclasses.replace(run, varied=(*run.varied, ("my_knob", "on"))) for run in runs]

    def report(suite, outcomes, base, default_mi_weight):
        table = tables.comparison_table(
            outcomes, suite, base=base, measure="accuracy", row_title="mine"
        )
        return ["My section.", "", table]

    fields = dict(
        name="my_suite",
        description="two arms, to show that a suite is one record",
        arms=(suites.Arm("mine", "my {base} + MI", mi=True), suites.Arm("theirs", "{base} alone")),
        build=build,
        report=report,
        plots=(plots.Bars("mine.png"),),
        pairs=(("mine", "theirs"),),
        label_counts="the one label count (20)",
        columns=("num_labeled", "my_knob"),
    )
    return suites.Suite(**{**fields, **changes})


def test_a_suite_of_ones_own_is_one_registered_record(tmp_path):
    suites.register(_own_suite())
    try:
        with pytest.raises(ValueError, match="already registered"):
            suites.register(_own_suite())
        options = suites.SuiteOptions(seeds=(0, 1))
        runs = suites.build("my_suite", load_config("digits"), options, pinned=[])
        assert [run.name for run in runs[:2]] == [
            "20_labels/mine/seed_0",
            "20_labels/theirs/seed_0",
        ]
        assert [(run.method, run.mi) for run in runs[:2]] == [
            ("fixmatch", True),
            ("fixmatch", False),
        ]
        invocation = _invocation(tmp_path)
        for run in runs:
            _fake_results(invocation, run, 0.9 if run.arm == "mine" else 0.8, [0.9] * 10)
        outcomes = results.collect(runs, str(tmp_path))
        results.write(
            str(tmp_path), "my_suite", outcomes, base="fixmatch", command="c", default_mi_weight=1.0
        )
        text = (tmp_path / "results.md").read_text()
        assert "My section." in text
        assert (
            "| mine | my fixmatch + MI | fixmatch alone | my fixmatch + MI − fixmatch alone" in text
        )
        assert "| 20 labels | 90.0 ± 0.0 | 80.0 ± 0.0 | +10.0 [+10.0, +10.0] |" in text
        assert "| setting | my fixmatch + MI | fixmatch alone |" in text  # Classes lost.
        assert "my_knob" in results.csv_columns() and _csv(tmp_path)[0]["my_knob"] == "on"
        assert (tmp_path / "mine.png").read_bytes()[:4] == b"\x89PNG"
        assert "  my_suite " in "\n".join(help_text.suite_lines())
        assert "my_suite: mine,theirs" in help_text.arms_help()
    finally:
        suites.unregister("my_suite")
    assert "my_suite" not in suites.names() and "my_knob" not in results.csv_columns()


def test_a_suite_record_refuses_arms_it_lacks():
    with pytest.raises(ValueError, match=r"name \['base'\], which are not its"):
        _own_suite(pairs=(("mine", "base"),))
    with pytest.raises(ValueError, match="not its"):
        _own_suite(default_arms=("muscle",))
    with pytest.raises(ValueError, match="repeat a name"):
        _own_suite(arms=(suites.Arm("mine", "a"), suites.Arm("mine", "b")))
    with pytest.raises(suites.SuiteError, match=r"Unknown arm\(s\) \['muscle'\] for this suite"):
        _own_suite().chosen_arms(suites.SuiteOptions(arms=("muscle",)))
    # "Every arm against base", in the order the table shows the arms (the user's --arms).
    objectives = suites.get("objectives")
    assert objectives.pairs_among(["sdt", "base", "iic"]) == [("sdt", "base"), ("iic", "base")]
    assert objectives.pairs_among(["sdt", "iic"]) == []


# ------------------------------------------------------------------ results files


def _invocation(workdir, overrides=()):
    return dispatch.Invocation(
        config_path="configs/digits.py",
        config_arg="num_labeled=50",
        overrides=tuple(overrides),
        workdir=str(workdir),
        total_steps=1500,
    )


def _fake_results(invocation, run, accuracy, per_class):
    """A results.json as the trainer writes it, with the run's own config."""
    config = load_config("digits", invocation.config_flag(run).split(":", 1)[1]).to_dict()
    for key, value in invocation.run_overrides(run):
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = type(node[leaf])(value) if node[leaf] is not None else value
    path = pathlib.Path(invocation.run_dir(run))
    path.mkdir(parents=True)
    (path / "results.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "accuracy": accuracy,
                "raw_accuracy": accuracy - 0.01,
                "final_accuracy": accuracy,
                "per_class_accuracy": per_class,
                "steps": 1500,
                "run": {"wall_seconds": 60.0},
                "config": json.loads(json.dumps(config)),
            }
        )
    )


def test_results_files_hold_the_hand_computed_statistics(tmp_path):
    runs = suites.build(
        "bias",
        load_config("digits"),
        suites.SuiteOptions(imbalance_ratios=(1.0, 10.0), arms=("muscle", "base")),
        pinned=[],
    )
    invocation = _invocation(tmp_path)
    accuracy = {"muscle": [0.90, 0.80, 0.85], "base": [0.85, 0.80, 0.80]}
    for run in runs:
        if run.setting == "ratio 10" and run.seed == 2:
            continue  # Not finished: reported as such, left out of the statistics.
        worst = 0.5 if run.arm == "muscle" else 0.4
        per_class = [1.0] * 9 + [worst + 0.1 * run.seed]
        _fake_results(invocation, run, accuracy[run.arm][run.seed], per_class)

    outcomes = results.collect(runs, str(tmp_path))
    results.write(
        str(tmp_path), "bias", outcomes, base="fixmatch", command="cmd", default_mi_weight=1.0
    )
    with open(tmp_path / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(results.csv_columns())
    assert len(rows) == len(runs) == 12
    first = rows[0]
    assert first["run"] == "ratio_1/muscle/seed_0" and first["imbalance_ratio"] == "1"
    assert float(first["accuracy"]) == 0.90 and float(first["worst_class_accuracy"]) == 0.5
    assert first["wall_seconds"] == "60.0" and first["steps"] == "1500"
    assert first["classes_lost"] == "0"  # Its lowest class, 0.5, is above 30 %.
    assert [row["status"] for row in rows].count("not finished") == 2

    text = (tmp_path / "results.md").read_text()
    # ratio 1: the hand-computed +3.3 [-3.8, +10.5] (see the statistics test).
    assert "| ratio 1 | 85.0 ± 5.0 | 81.7 ± 2.9 | +3.3 [-3.8, +10.5] |" in text
    # ratio 10 has seeds 0 and 1 only: differences 0.05 and 0.
    assert "| ratio 10 | 85.0 ± 7.1 | 82.5 ± 3.5 | +2.5 [-29.3, +34.3] |" in text
    # Worst class: muscle 0.5/0.6/0.7, base 0.4/0.5/0.6, so +10 every seed (an interval of 0).
    assert "| ratio 1 | 60.0 ± 10.0 | 50.0 ± 10.0 | +10.0 [+10.0, +10.0] |" in text
    assert "Not finished (2): ratio_10/muscle/seed_2, ratio_10/base/seed_2" in text
    assert (tmp_path / "accuracy_vs_imbalance.png").read_bytes()[:4] == b"\x89PNG"


def test_a_finished_run_with_other_settings_is_not_mixed_in(tmp_path):
    runs = suites.build("label_sweep", load_config("digits"), suites.SuiteOptions(), pinned=[])
    old = _invocation(tmp_path, overrides=[("total_steps", 300)])
    _fake_results(old, runs[0], 0.9, [0.9] * 10)
    assert dispatch.finished(old, runs[0])
    new = _invocation(tmp_path, overrides=[("total_steps", 600)])
    with pytest.raises(dispatch.DispatchError, match=r"total_steps=300 \(asked: 600\)"):
        dispatch.finished(new, runs[0])
    # Same settings, but MI off where MUSCLE asks MI on (runs[1] is the base arm).
    with pytest.raises(dispatch.DispatchError, match="another --workdir"):
        dispatch.check_finished_run(
            old, runs[1], json.loads((tmp_path / runs[0].name / "results.json").read_text())
        )


def test_run_commands_are_ordinary_main_commands(tmp_path):
    runs = suites.build("finetune", load_config("digits"), suites.SuiteOptions(), pinned=[])
    invocation = _invocation(tmp_path, overrides=[("optimizer.learning_rate", 0.01)])
    tuned = next(run for run in runs if run.arm == suites.finetune.FINETUNE_MUSCLE)
    assert invocation.command(tuned)[1:] == [
        "-m",
        "muscle_jax.main",
        "--config=configs/digits.py:num_labeled=50,method=fixmatch,mi=True",
        f"--workdir={tmp_path}/finetune/finetune_muscle/seed_0",
        "--config.optimizer.learning_rate=0.01",
        "--config.data.num_labeled=20",
        "--config.seed=0",
        "--config.total_steps=750",
        f"--config.init_from={tmp_path}/finetune/pretrain/seed_0/checkpoints",
    ]
    assert invocation.steps(tuned) == 750
    # A trainer module of the user's (one that registers a method) starts each run instead.
    own = dataclasses.replace(invocation, trainer="my_project.train")
    assert own.command(tuned)[1:3] == ["-m", "my_project.train"]
    assert own.command(tuned)[3:] == invocation.command(tuned)[3:]
    (_, _, _, _, script), *_ = dispatch.slurm_scripts(runs, own, "finetune", sbatch_args=[])
    assert "export MAIN_MODULE=my_project.train" in script
    environment = dispatch.run_environment(invocation)
    assert environment.get("JAX_COMPILATION_CACHE_DIR") in (
        os.environ.get("JAX_COMPILATION_CACHE_DIR"),
        f"{tmp_path}/.jax_cache",
    )


# ------------------------------------------------------------------ SLURM


@pytest.mark.slow
def test_slurm_dry_run_writes_chained_arrays_that_launch_each_run(tmp_path):
    workdir = tmp_path / "ft"
    result = _experiments(
        "--suite=finetune",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        "--seeds=0,1",
        "--dispatch=slurm",
        "--dry-run",
        "--sbatch_arg=--partition=gpu",
    )
    assert result.returncode == 0, result.stderr
    assert "would submit: sbatch --parsable --partition=gpu " in result.stdout
    assert "--dependency=afterok:" in result.stdout  # fine-tuning waits for pre-training
    stage0 = (workdir / "slurm" / "finetune_stage0.sbatch").read_text()
    assert "export MAIN_MODULE=muscle_jax.main" in stage0
    assert "#SBATCH --array=0-3" in stage0  # 2 pre-training + 2 from-scratch runs
    lines = (workdir / "slurm" / "finetune_stage1.runs").read_text().splitlines()
    assert len(lines) == 4
    # An array task runs its line through launch/gpu_slurm.sbatch (DRY_RUN=1: print srun's line).
    script = workdir / "slurm" / "finetune_stage1.sbatch"
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", DRY_RUN="1", SLURM_SUBMIT_DIR=str(REPO))
    task = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True)
    assert task.returncode == 0, task.stderr
    assert "muscle_jax.main --distributed" in task.stdout
    assert "finetune_supervised/seed_0" in task.stdout
    assert f"init_from={workdir}/finetune/pretrain/seed_0/checkpoints" in task.stdout
    assert not (workdir / "finetune").exists()  # Nothing trained.


@pytest.mark.slow
def test_submitting_without_sbatch_says_how_to_dry_run(tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))
    result = _experiments(
        "--suite=label_sweep",
        "--config=configs/tiny.py",
        f"--workdir={tmp_path / 'w'}",
        "--dispatch=slurm",
        env=env,
    )
    assert result.returncode == 2
    assert "sbatch is not on PATH" in result.stderr and "--dry_run" in result.stderr


# ------------------------------------------------------------------ command line


BAD_COMMAND_LINES = [
    (["--suite=label_sweep", "--seeds=0,one"], "--seeds=0,one: every value must be a int"),
    (["--suite=label_sweep", "--config.data.num_labeled=20"], "--config.data.num_labeled is what"),
    (["--suite=bias", "--imbalance_ratios=1,0.5"], "must be >= 1"),
    (["--suite=sweep"], "bad command line"),
    (["--suite=label_sweep", "--config.totl_steps=3"], "unknown config key"),
]


@pytest.fixture(scope="module")
def bad_command_line_outcomes(tmp_path_factory):
    """Each of BAD_COMMAND_LINES with its own workdir, all answered by one interpreter."""
    root = tmp_path_factory.mktemp("bad_command_lines")
    workdirs = [root / str(index) for index in range(len(BAD_COMMAND_LINES))]
    outcomes = cli_driver.run_command_lines(
        "muscle_jax.experiments.__main__",
        [
            ["--config=configs/tiny.py", f"--workdir={workdir}", *args]
            for workdir, (args, _) in zip(workdirs, BAD_COMMAND_LINES, strict=True)
        ],
    )
    return list(zip(workdirs, outcomes, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BAD_COMMAND_LINES)))
def test_bad_command_lines_fail_before_anything_runs(bad_command_line_outcomes, index):
    workdir, result = bad_command_line_outcomes[index]
    message = BAD_COMMAND_LINES[index][1]
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not workdir.exists()


def _csv(workdir):
    with open(workdir / "results.csv") as handle:
        return list(csv.DictReader(handle))


def _check_suite_files(workdir, expected_runs, plot):
    rows = _csv(workdir)
    assert len(rows) == expected_runs
    assert {row["status"] for row in rows} == {"completed"}
    assert {row["seed"] for row in rows} == {"0", "1"}
    for row in rows:
        assert 0 <= float(row["accuracy"]) <= 1 and 0 <= float(row["worst_class_accuracy"]) <= 1
        assert row["classes_lost"].isdigit()
        assert (workdir / row["run"] / "results.json").exists()
    assert "95 % CI" in (workdir / "results.md").read_text()
    assert "## Classes lost (test recall below 30 %)" in (workdir / "results.md").read_text()
    assert (workdir / plot).read_bytes()[:4] == b"\x89PNG"
    return rows


@pytest.mark.slow
@pytest.mark.parametrize(
    "suite, args, expected_runs, plot",
    [
        (
            "bias",
            [
                "--arms=muscle,base",
                "--imbalance_ratios=2",
                "--label_counts=20",
                "--unlabeled=balanced,same",
            ],
            8,
            "accuracy_vs_imbalance.png",
        ),
        ("finetune", ["--arms=finetune_muscle,finetune_supervised"], 6, "finetune.png"),
        ("mi_ablation", ["--knobs=mi_weight", "--mi_weights=0,1"], 4, "mi_ablation.png"),
        ("objectives", ["--arms=base,sdt"], 4, "objectives.png"),
        # label_sweep's bookkeeping is the real kill-and-resume test's, below.
        ("bases", ["--bases=freematch", "--label_counts=10"], 4, "bases.png"),
        (
            "noise",
            ["--noise_levels=0,0.4", "--arms=base,self_adaptive", "--label_counts=20"],
            8,
            "accuracy_vs_noise.png",
        ),
    ],
)
def test_each_suite_through_the_command_line(tmp_path, suite, args, expected_runs, plot):
    """Every suite's runs, files, statistics and plots, each run by the fake trainer."""
    workdir = tmp_path / suite
    command = [f"--suite={suite}", "--config=configs/tiny.py", f"--workdir={workdir}"]
    command += ["--seeds=0,1", *args, *SHORT, f"--trainer={FAKE_TRAINER}"]
    result = _experiments(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _check_suite_files(workdir, expected_runs, plot)
    for row in rows:
        # The fake's accuracies (tests/fake_trainer.py): 0.5 + 0.1 consistency + 0.05 MI
        # + 0.01 a seed, and its worst class 0.1 below.
        config = json.loads((workdir / row["run"] / "results.json").read_text())["config"]
        expected = 0.5 + 0.01 * int(row["seed"])
        expected += 0.1 * (config["loss"]["consistency"] != "none")
        mi_on = config["loss"]["unsupervised"] != "none"
        expected += 0.05 * (mi_on and config["loss"]["unsupervised_weight"] > 0)
        assert float(row["accuracy"]) == pytest.approx(expected), row["run"]
        assert float(row["worst_class_accuracy"]) == pytest.approx(expected - 0.1), row["run"]
        if suite == "noise":  # The noise level and the supervised term reach the run.
            assert config["data"]["label_noise"] == float(row["label_noise"])
            wanted = "self_adaptive" if row["arm"] == "self_adaptive" else "cross_entropy"
            assert config["loss"]["supervised"] == wanted
        if suite == "bias":  # The suite's settings reach the run's config.
            assert config["data"]["imbalance_ratio"] == 2.0
            same = row["setting"].endswith("unlabeled same")
            assert config["data"]["unlabeled_imbalance_ratio"] == (2.0 if same else 1.0)
    if suite == "finetune":
        log = (workdir / "finetune/finetune_muscle/seed_1/console.log").read_text()
        pretrained = workdir / "finetune/pretrain/seed_1/checkpoints"
        assert f"Initialised the weights from {pretrained}" in log
        assert {row["steps"] for row in rows if row["arm"] != "pretrain"} == {"2"}
    if suite == "mi_ablation":
        # MI weight 1 against 0: the fake's +0.05 at both seeds, an interval of zero width.
        assert "+5.0 [+5.0, +5.0]" in (workdir / "results.md").read_text()

    if suite != "finetune":
        return
    # For one suite (the two-stage one, whose stages override the user's total_steps):
    # a rerun skips every run; a changed setting is refused with the fix.
    again = _experiments(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{expected_runs} of {expected_runs} runs already finished: skipped." in again.stderr
    changed = _experiments(*command, "--config.optimizer.learning_rate=0.5")
    assert changed.returncode == 2
    assert "trained with other settings" in changed.stderr and "another --workdir" in changed.stderr
    assert "Traceback" not in changed.stderr

    # --report_only rebuilds the same report from the run directories.
    before = _csv(workdir)
    (workdir / "results.csv").unlink()
    rebuilt = _experiments(*command, "--report_only")
    assert rebuilt.returncode == 0 and "wrote" in rebuilt.stdout
    assert _csv(workdir) == before


@pytest.mark.slow(heavy=True)
def test_label_sweep_killed_mid_way_resumes_and_skips_finished_runs(tmp_path):
    workdir = tmp_path / "sweep"
    args = [
        "--suite=label_sweep",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        # Two real runs: the first finishes, the second is stopped mid-way by the signal.
        "--seeds=0",
        "--label_counts=20",
        "--arms=muscle,base",
        *SHORT,
    ]
    suite = subprocess.Popen(
        [sys.executable, "-m", "muscle_jax.experiments", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = workdir / "20_labels/muscle/seed_0/results.json"
    second = workdir / "20_labels/base/seed_0/checkpoints"
    deadline = time.monotonic() + 240
    while not (first.exists() and second.exists()) and time.monotonic() < deadline:
        assert suite.poll() is None, suite.communicate()
        time.sleep(0.2)
    assert first.exists(), "the first run did not finish in time"
    finished_before = first.stat().st_mtime_ns
    suite.send_signal(signal.SIGINT)
    _, stderr = suite.communicate(timeout=120)
    assert suite.returncode == 3, stderr
    assert "run the same command to resume" in stderr
    rows = _csv(workdir)  # Written after each finished run: a partial report.
    # The signal came while the second run was starting (its checkpoint directory
    # is made before it compiles), so only the first is finished.
    assert [row["status"] for row in rows].count("completed") == 1, rows

    resumed = _experiments(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 of 2 runs already finished: skipped." in resumed.stderr
    assert first.stat().st_mtime_ns == finished_before  # Not retrained.
    rows = _csv(workdir)
    assert [row["status"] for row in rows] == ["completed"] * 2
    for row in rows:  # What the real trainer wrote is what the report holds.
        results = json.loads((workdir / row["run"] / "results.json").read_text())
        assert results["run"]["wall_seconds"] > 0 and results["steps"] == 4  # Trained.
        assert results["config"]["data"]["num_labeled"] == 20
        assert float(row["accuracy"]) == results["accuracy"]
        assert 0 <= float(row["worst_class_accuracy"]) <= 1
        assert (workdir / row["run"] / "checkpoints").is_dir()
    text = (workdir / "results.md").read_text()
    assert "2 of 2 runs finished" in text
    assert (workdir / "accuracy_vs_labels.png").read_bytes()[:4] == b"\x89PNG"

    rebuilt = _experiments(*args, "--report_only")
    assert rebuilt.returncode == 0 and "wrote" in rebuilt.stdout
    assert _csv(workdir) == rows
