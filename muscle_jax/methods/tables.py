"""The docs' tables of methods and their settings, written from the registry.

docs/method.md holds the output of `config_tables` (tests/test_methods.py
checks it), so adding a `Term` and regenerating is all it takes to document
it: ``python -m muscle_jax.methods.tables``.
"""

from muscle_jax import methods


def _value(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def role_table(defaults: dict[str, str]) -> str:
    """Each role's choices (``loss.<role>``), in registration order, and its default."""
    rows = ["| key | choices | default |", "|---|---|---|"]
    for role in methods.ROLES:
        choices = ", ".join(f"`{name}`" for name in methods.names(role))
        rows.append(f"| `loss.{role}` | {choices} | `{defaults[role]}` |")
    return "\n".join(rows)


def section_table() -> str:
    """Every method's section ``loss.<name>`` with its keys and their defaults."""
    rows = ["| section | keys (defaults) |", "|---|---|"]
    for name, section in methods.config_sections().items():
        keys = ", ".join(f"`{key}` ({_value(value)})" for key, value in section.items())
        rows.append(f"| `loss.{name}` | {keys} |")
    return "\n".join(rows)


def config_tables() -> str:
    """Both tables, as docs/method.md's "Config keys" holds them."""
    from muscle_jax import config_defaults  # Deferred: it imports this package.

    loss = config_defaults.base_config().loss
    defaults = {role: loss[role] for role in methods.ROLES}
    return role_table(defaults) + "\n\n" + section_table() + "\n"


if __name__ == "__main__":
    print(config_tables(), end="")
