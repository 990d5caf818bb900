"""Lists written by hand, checked against the registries they list.

docs/experiments.md's tables of suites (and their arms, plots and CSV
columns) against the suite registry (`muscle_jax.experiments.suites`), the
configs' "Methods" lines against the method registry (`muscle_jax.methods`),
and ``--help``'s lists, which are written from the suite registry. A suite,
arm or method added without its line in the docs fails here, naming it.
"""

import ast
import pathlib
import re

import pytest

from muscle_jax import config_defaults, methods
from muscle_jax.experiments import help_text, results, suites

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS_DOC = REPO / "docs" / "experiments.md"


def _tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table whose first header cell is ``suite``: its rows' cells, header first."""
    tables, current = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if current is None:
            current = [cells]
            if cells[0] == "suite":
                tables.append(current)
        elif not set(line) <= set("|-: "):  # Not the separator row.
            current.append(cells)
    return tables


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _suite_of(row: list[str]) -> str:
    """The suite a row is about: the first backticked name of its first cell."""
    return _backticked(row[0])[0]


def test_every_table_of_suites_lists_each_registered_suite_once_in_order():
    tables = _tables(EXPERIMENTS_DOC.read_text())
    assert len(tables) >= 2, "docs/experiments.md: the suites table and the cost table"
    for header, *rows in tables:
        listed = [_suite_of(row) for row in rows]
        assert listed == list(suites.names()), f"the table {header[:2]} lists {listed}"


def test_the_suites_table_names_every_arm_of_each_suite():
    header, *rows = _tables(EXPERIMENTS_DOC.read_text())[0]
    column = next(i for i, title in enumerate(header) if title.startswith("arms"))
    for row in rows:
        suite = suites.get(_suite_of(row))
        named = set(_backticked(row[column]))
        missing = [arm for arm in suite.choices if arm not in named]
        unknown = named - {arm.name for arm in suite.arms}
        assert not missing, f"{suite.name}: arms {missing} are missing from docs/experiments.md"
        assert not unknown, f"{suite.name}: docs/experiments.md names arms it lacks: {unknown}"


def test_the_docs_name_every_plot_and_results_column():
    text = EXPERIMENTS_DOC.read_text()
    for suite in suites.registered():
        for plot in suite.plots:
            assert f"`{plot.filename}`" in text, (suite.name, plot.filename)
    for column in results.varied_columns():
        assert f"`{column}`" in text, column


def test_help_lists_every_suite_its_arms_and_label_counts():
    lines = help_text.suite_lines()
    arms = help_text.arms_help()
    counts = help_text.label_counts_help()
    assert len(lines) == len(suites.names())
    for line, suite in zip(lines, suites.registered(), strict=True):
        assert line.split(maxsplit=1) == [suite.name, suite.description]
        if suite.choices:
            assert f"{suite.name}: {','.join(suite.choices)}" in arms
        else:  # The MI ablation picks no arms: it is not offered any.
            assert f"{suite.name}:" not in arms
        assert f"{suite.name}: {suite.label_counts}" in counts
    assert "bias: muscle,base,supervised_mi,supervised,freematch," in arms
    assert "(default: muscle,base,supervised_mi,supervised)" in arms
    assert "objectives: base,iic,sdt,mio,self_adaptive" in arms


def _documented_configs() -> dict[str, str]:
    """``{config file: its "Methods" paragraph and the one after}`` for every config with one."""
    found = {}
    for path in sorted((REPO / "configs").glob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        match = re.search(r"^Methods\b.*?(?=\n\n|\Z)", docstring, re.S | re.M)
        if match:
            found[path.name] = match.group(0)
    return found


DOCUMENTED_CONFIGS = _documented_configs()


def test_the_dataset_configs_document_their_methods():
    expected = {"cifar10.py", "cifar100.py", "mini_imagenet.py", "mnist.py", "stl10.py", "svhn.py"}
    assert expected <= set(DOCUMENTED_CONFIGS)


@pytest.mark.parametrize("filename", sorted(DOCUMENTED_CONFIGS))
def test_a_configs_methods_lines_name_every_registered_method(filename):
    text = DOCUMENTED_CONFIGS[filename]
    methods_line, _, other_terms = text.partition("Other terms:")
    missing = [
        f"method={name}"
        for name in config_defaults.methods_for_variant()
        if not re.search(rf"\b{name}\b", methods_line)
    ]
    # The other roles' terms as variants (``unsupervised=sdt|mio``), each but the
    # config's own default, which the line names in words ("in place of MUSCLE's IIC").
    defaults = config_defaults.base_config().loss
    for role in (methods.UNSUPERVISED, methods.SUPERVISED, methods.ADDON):
        for name in methods.names(role):
            if name in (defaults.get(role, "none"), "none"):
                continue
            if not re.search(rf"(?<!\w){role}=[\w|]*\b{name}\b", other_terms):
                missing.append(f"{role}={name}")
    assert not missing, f"configs/{filename}'s Methods lines do not name {missing}"
