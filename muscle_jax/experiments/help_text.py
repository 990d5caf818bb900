"""``--help``'s lists of suites, arms and label counts, written from the suite registry.

The command line (`__main__`) builds its flags' help from these, so a suite
or arm that is registered is listed, and one that is not is not.
"""

from muscle_jax.experiments import suites


def suite_lines() -> list[str]:
    """One line a suite: its name and `Suite.description`."""
    width = max(map(len, suites.names())) + 1
    return [f"  {suite.name:{width}s} {suite.description}" for suite in suites.registered()]


def arms_help() -> str:
    """``--arms``: per suite, the arms it may pick, and its default where that is not all."""
    parts = []
    for suite in suites.registered():
        if suite.choices:
            default = f" (default: {','.join(suite.default_arms)})" if suite.default_arms else ""
            parts.append(f"{suite.name}: {','.join(suite.choices)}{default}")
    return "A subset of the suite's arms (default: all of them): " + "; ".join(parts) + "."


def label_counts_help() -> str:
    """``--label_counts``: per suite, what it means there (`Suite.label_counts`)."""
    parts = [f"{s.name}: {s.label_counts}" for s in suites.registered() if s.label_counts]
    return "; ".join(parts) + "."
