"""Several command lines of one absl program, run one after another in one interpreter.

A test that checks what a command line answers (an error message, an exit
code, a dry run) need not pay the interpreter's start and the imports once
per command line: the driver parses each command line afresh (absl's flags
are reset in between) and reports, per command line, what a separate
``python -m MODULE ARGS`` would have: its exit code, stdout and stderr.
Commands that train, or that test what a fresh process does, start their
own process instead.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_DRIVER = r"""
import contextlib, importlib, io, json, sys, traceback
from absl import app, flags

name = sys.argv[1]
module = importlib.import_module(name)
outcomes = []
for argv in json.loads(sys.argv[2]):
    # Back to the state before the first parse: the values, and the per-field
    # override flags (--config.KEY) that parsing a config file defines.
    for flag_name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, flag_name)
    flags.FLAGS.unparse_flags()
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [name, *argv]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            app.run(module.main, argv=sys.argv, flags_parser=module.parse_flags)
        except SystemExit as stop:
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
    outcomes.append({"returncode": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
print(json.dumps(outcomes))
"""


@dataclass(frozen=True)
class Outcome:
    """What one command line gave, as `subprocess.run` reports it."""

    returncode: int
    stdout: str
    stderr: str


def run_command_lines(module: str, command_lines: list[list[str]], **kwargs) -> list[Outcome]:
    """Runs ``python -m module ARGS`` for each ARGS of ``command_lines`` in one interpreter."""
    kwargs.setdefault("cwd", REPO)
    kwargs.setdefault("timeout", 600)
    completed = subprocess.run(
        [sys.executable, "-c", _DRIVER, module, json.dumps(command_lines)],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [Outcome(**outcome) for outcome in json.loads(completed.stdout.strip().splitlines()[-1])]
