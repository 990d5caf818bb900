"""Shared test helpers."""

import importlib.util
import os

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(name: str, arg: str | None = None):
    """``configs/<name>.py``'s ``get_config(arg)``, loaded by path as config_flags does."""
    path = os.path.join(CONFIG_DIR, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
