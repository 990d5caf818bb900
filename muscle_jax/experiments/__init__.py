"""Experiment suites: MUSCLE against its base method over seeds, with honest statistics.

``python -m muscle_jax.experiments --suite=label_sweep --config=configs/digits.py
--workdir=DIR`` runs the suite; `suites` says which runs each suite is made of,
`dispatch` runs them, `results`, `statistics` and `plots` report them.
"""
