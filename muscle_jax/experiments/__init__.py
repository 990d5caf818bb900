"""Experiment suites: MUSCLE against its base method over seeds, with honest statistics.

``python -m muscle_jax.experiments --suite=label_sweep --config=configs/digits.py
--workdir=DIR`` runs the suite. `suites` registers the suites, one `records.Suite`
each, and builds their runs; `dispatch` runs them; `outcomes` reads them back,
and `results` (with `tables`, `statistics`) and `plots` report them.
"""
