"""Sphinx configuration of the muscle_jax documentation site.

Build it (offline: nothing is fetched) with warnings as errors::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The guides are the Markdown pages beside this file (MyST); the API
reference is generated from the docstrings (autodoc, napoleon for the
Google-style ``Args:``/``Returns:``, autosummary for the tables).
"""

import inspect
import os
import sys

import sphinx.util.inspect

# The package is importable from the checkout without an install too.
sys.path.insert(0, os.path.abspath(".."))
# The API pages import the trainer, hence TensorFlow: keep its C++ start-up
# notices out of the build's output, where only Sphinx's warnings should be.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

project = "muscle_jax"
author = "muscle_jax authors"
copyright = "muscle_jax authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# `name` in a docstring links to that object when it is documented, and reads as
# code otherwise (the docstrings use single backticks for names throughout).
default_role = "py:obj"

# --- MyST: the guides are plain GitHub Markdown (no MyST extensions), so that they
# read the same on GitHub. `[text](page.md#a-heading)` resolves to the heading's
# slug, as on GitHub.
myst_heading_anchors = 3

# --- API reference.
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource"}
autodoc_member_order = "bysource"
# Signatures read `ArrayLike`, not the Union it stands for: the modules keep their
# annotations as strings (`from __future__ import annotations`) and the aliases
# below name them.
autodoc_type_aliases = {"ArrayLike": "ArrayLike"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# `Attributes:` of a dataclass become field lists, so the fields (documented as
# members too) are not described twice.
napoleon_use_ivar = True
napoleon_custom_sections = [("References", "notes_style")]

# --- HTML: no remote assets; MathJax is loaded by the reader's browser.
html_theme = "furo"
html_title = "muscle_jax"
html_static_path = []

# Guides link to repository files outside docs/ the way GitHub resolves them; the
# ones the site includes as pages of its own are sent to those pages.
_OUT_OF_TREE_PAGES = {"../benchmarks/README.md": "benchmarks.md"}


def _link_included_pages(app, docname, source):
    for target, page in _OUT_OF_TREE_PAGES.items():
        source[0] = source[0].replace(f"]({target})", f"]({page})")


def _drop_type_docstrings(app, what, name, obj, options, lines):
    """A constant without a docstring of its own shows its value, not tuple's docstring."""
    if what in ("data", "attribute") and lines:
        own = getattr(type(obj), "__doc__", None)
        if isinstance(own, str) and "\n".join(lines).strip() == inspect.cleandoc(own).strip():
            lines.clear()


# Sphinx renders an alias nested in another annotation (`ArrayLike | None`,
# `tuple[ArrayLike, ArrayLike]`) by its repr, `TypeAliasForwardRef('ArrayLike')`;
# only a bare alias gets its name. The repr is what nested ones print.
sphinx.util.inspect.TypeAliasForwardRef.__repr__ = lambda self: self.name


def setup(app):
    app.connect("source-read", _link_included_pages)
    app.connect("autodoc-process-docstring", _drop_type_docstrings)
