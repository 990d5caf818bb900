"""docs/custom.md's snippets run as written: arrays in memory, and a method of your own."""

import json
import os
import subprocess
import sys

import pytest

from tests.cli_driver import REPO
from tests.helpers import xla_flags

CUSTOM_MD = os.path.join(REPO, "docs", "custom.md")


def snippet(name: str) -> str:
    """The code block after ``<!-- snippet: name -->`` in docs/custom.md."""
    text = open(CUSTOM_MD).read()
    marker = f"<!-- snippet: {name} -->\n```python\n"
    start = text.index(marker) + len(marker)
    return text[start : text.index("```", start)]


def command(name: str, **placeholders: str) -> list[str]:
    """The arguments of the ``python -m muscle_jax.main`` command after ``<!-- command: name -->``.

    Each of ``placeholders`` (``DIR="/data/x"``) replaces its name in them, as a
    user would type their own paths (tests/test_custom_data.py runs it).
    """
    text = open(CUSTOM_MD).read()
    marker = f"<!-- command: {name} -->\n```bash\n"
    start = text.index(marker) + len(marker)
    words = text[start : text.index("```", start)].replace("\\\n", " ").split()
    prefix = ["python", "-m", "muscle_jax.main"]
    assert words[:3] == prefix, words
    for placeholder, value in placeholders.items():
        words = [word.replace(placeholder, value) for word in words]
    return words[3:]


# One interpreter, as a user's: the arrays snippet, then `python my_method.py ARGS`.
_DRIVER = r"""
import json, runpy, sys
arrays, method_file, method_args = json.loads(sys.argv[1])
exec(compile(arrays, "docs/custom.md (arrays)", "exec"), {})
sys.argv = [method_file, *method_args]
try:
    runpy.run_path(method_file, run_name="__main__")
except SystemExit as stop:
    assert stop.code in (None, 0), stop.code
"""


@pytest.mark.slow(heavy=True)
def test_the_arrays_and_method_snippets_train(tmp_path):
    arrays = snippet("arrays").replace("/tmp/muscle_custom_arrays", str(tmp_path / "arrays"))
    method_file = tmp_path / "my_method.py"
    method_file.write_text(snippet("method"))
    args = [
        "--config=configs/tiny.py:unsupervised=my_entropy",  # The docs' command, tiny.
        "--config.loss.my_entropy.scale=0.5",
        "--config.total_steps=4",
        f"--workdir={tmp_path / 'entropy'}",
    ]
    env = {**os.environ, "XLA_FLAGS": xla_flags()}  # One device, as a user's machine.
    completed = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps([arrays, str(method_file), args])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "classes ['plain', 'left', 'top'] accuracy" in completed.stdout
    arrays_results = json.loads((tmp_path / "arrays" / "results.json").read_text())
    assert arrays_results["steps"] == 8 and arrays_results["config"]["data"]["num_classes"] == 3
    entropy = json.loads((tmp_path / "entropy" / "results.json").read_text())
    assert entropy["config"]["loss"]["unsupervised"] == "my_entropy"
    assert entropy["config"]["loss"]["my_entropy"]["scale"] == 0.5
    assert entropy["steps"] == 4


def test_the_backbone_snippet_keeps_the_contract(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(snippet("backbone"))
    monkeypatch.syspath_prepend(str(tmp_path))
    from flax import nnx

    from muscle_jax import models

    model = nnx.eval_shape(
        lambda: models.create_model(
            "mynets:TwoConvs", num_classes=3, rngs=nnx.Rngs(0), in_channels=1, width=4
        )
    )
    models.user.check_contract(model, (16, 16, 1), "mynets:TwoConvs")
    assert model.num_features == 8
