"""The experiment suites, one `Suite` record each, and the runs a suite is made of.

``--suite`` names a registered `Suite` (`muscle_jax.experiments.records`).
Everything else asks this registry what a suite means: the command line
(``--suite``'s choices and ``--help``'s lists), results.md (the suite's
section and pairs), the plots, results.csv's columns and the docs' checks.
Adding a suite is one module here that calls `register(Suite(...))`, and its
import at the end of this file.

A suite is a list of `Run`s. Each run is an ordinary
``python -m muscle_jax.main`` run: the user's config, a method variant
(``method=...,mi=...`` after the config's ``:``) and ``--config.KEY=VALUE``
overrides for what the suite varies.
"""

from muscle_jax.experiments.records import (
    EVERY_ARM,
    Arm,
    Run,
    Suite,
    SuiteError,
    SuiteOptions,
)
from muscle_jax.experiments.suites.common import base_method
from muscle_jax.experiments.suites.registry import (
    build,
    get,
    names,
    register,
    registered,
    unregister,
)

__all__ = [
    "EVERY_ARM",
    "Arm",
    "Run",
    "Suite",
    "SuiteError",
    "SuiteOptions",
    "base_method",
    "build",
    "get",
    "names",
    "register",
    "registered",
    "unregister",
]

# The built-in suites register themselves on import, in the order --help lists them.
from muscle_jax.experiments.suites import (  # noqa: F401, I001
    label_sweep,
    bias,
    finetune,
    mi_ablation,
    objectives,
    bases,
    noise,
)
