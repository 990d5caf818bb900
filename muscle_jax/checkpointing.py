"""Every Orbax call of the project, behind one small class.

A checkpoint holds two items: ``state`` (the train state pytree) and
``meta`` (JSON: the evaluation history, and what the state must be
compatible with). Orbax writes each step to a temporary directory and
renames it when complete, so a run killed mid-write leaves no checkpoint
that `latest_step` would return.

The compatibility record names the model's parameter layout
(``parameter_layout``, `muscle_jax.models.PARAMETER_LAYOUT`). A checkpoint
without one was written before it, in layout 1; it is restored into layout 2
here (`_from_layout_1`): a built-in model's layers move under ``backbone``. A
layout this code does not know (a newer muscle_jax's) is refused in one line.
"""

import os
import sys
import time
import traceback
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

# The compatibility record's key for the model's parameter layout; a checkpoint
# without it was written in layout 1.
LAYOUT_KEY = "parameter_layout"

# Where unreadable checkpoints are moved, beside the checkpoint directory.
UNREADABLE_SUFFIX = ".unreadable"


class IncompatibleCheckpointError(ValueError):
    """A checkpoint written by a run with another model or dataset."""


class UnreadableCheckpointError(OSError):
    """No checkpoint of the workdir could be read; the message names them and what to do."""


class Checkpointer:
    """Saves and restores train states in ``directory``, keeping the last ``max_to_keep``."""

    def __init__(self, directory: str, *, max_to_keep: int, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            # Asynchronous saves overlap the write with training; the
            # manager finishes one before it starts the next.
            enable_async_checkpointing=not read_only,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Starts saving ``state`` and ``meta`` as ``step``; returns whether it saves."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def restore_meta(self, step: int | None = None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def restore(
        self, abstract_state: Any, *, step: int | None = None, expected: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """Restores ``(state, meta)`` at ``step`` (default: latest) into ``abstract_state``.

        ``expected`` holds what must match the run that wrote the checkpoint
        (model, classes, ...); a mismatch raises before any array is read.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No complete checkpoint in {self.directory}.")
        meta = self.restore_meta(step)
        found = meta.get("compatibility", {})
        check_compatible(found, expected, where=self.directory)
        upgrade = _moves_layers_under_backbone(found, expected)
        target = _to_layout_1(abstract_state) if upgrade else abstract_state
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        state = restored["state"]
        return (_from_layout_1(abstract_state, state) if upgrade else state), restored["meta"]

    def restore_newest_readable(
        self, abstract_state: Any, *, expected: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """Restores the newest checkpoint that can be read, moving unreadable ones aside.

        A checkpoint that fails to load (a corrupt or truncated file) is
        reported in one warning line, moved to ``DIR.unreadable/STEP-TIME``
        (never deleted) and the next older one is tried. An incompatible
        checkpoint is not skipped: that is the wrong workdir, not damage.
        """
        tried = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                return self.restore(abstract_state, step=step, expected=expected)
            except IncompatibleCheckpointError:
                raise
            except Exception as error:  # Orbax and TensorStore raise many types for bad bytes.
                _drop_late_callbacks_of_failed_reads()
                reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
                moved_to = self._move_aside(step)
                logging.warning(
                    "Checkpoint step %d in %s cannot be read (%s); moved it to %s and trying the "
                    "previous one.",
                    step,
                    self.directory,
                    reason,
                    moved_to,
                )
                tried.append(f"step {step} ({reason})")
        raise UnreadableCheckpointError(
            f"No checkpoint in {self.directory} can be read: {'; '.join(tried)}. They were moved "
            f"to {self.directory}{UNREADABLE_SUFFIX}/. Rerunning the same command starts over "
            "from step 0 (saying so); or restore a checkpoint from a backup into the "
            "checkpoints directory first."
        )

    def moved_aside(self) -> list[str]:
        """The checkpoints that `restore_newest_readable` moved aside, oldest first."""
        target_dir = self.directory + UNREADABLE_SUFFIX
        if not os.path.isdir(target_dir):
            return []
        return sorted(os.path.join(target_dir, name) for name in os.listdir(target_dir))

    def _move_aside(self, step: int) -> str:
        target_dir = self.directory + UNREADABLE_SUFFIX
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(os.path.join(self.directory, str(step)), target)
        self._manager.reload()
        return target

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _is_late_callback_of_a_closed_loop(unraisable) -> bool:
    """Whether ``unraisable`` is asyncio refusing a callback because its loop has closed."""
    error = unraisable.exc_value
    return (
        isinstance(error, RuntimeError)
        and str(error) == "Event loop is closed"
        and unraisable.exc_traceback is not None
        and any(
            frame.name == "call_soon_threadsafe"
            for frame in traceback.extract_tb(unraisable.exc_traceback)
        )
    )


def _drop_late_callbacks_of_failed_reads() -> None:
    """Silences the ``Event loop is closed`` tracebacks a failed restore leaves behind.

    Orbax runs each restore on an event loop of its own and closes it when the
    restore fails; TensorStore's other reads of that checkpoint finish later, on
    their own threads, and try to report to the closed loop. Python prints each
    as an "Exception ignored" traceback (15 of them for one damaged checkpoint,
    after the one warning line that matters). Only exactly that error is
    dropped, from the first unreadable checkpoint on; every other unraisable
    exception reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_drops_late_callbacks", False):
        return

    def hook(unraisable):
        if not _is_late_callback_of_a_closed_loop(unraisable):
            previous(unraisable)

    hook._drops_late_callbacks = True
    sys.unraisablehook = hook


def _layout(found: dict[str, Any]) -> Any:
    """The parameter layout a checkpoint's compatibility record names (1 before the record)."""
    return found.get(LAYOUT_KEY, 1)


def _moves_layers_under_backbone(found: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether restoring ``found``'s checkpoint into ``expected``'s run is the layout 1 -> 2 move.

    Layout 1 held a built-in model's layers at the top of its variables, beside
    ``heads``; layout 2 holds them under ``backbone``. A backbone of yours
    (``module:Class``) was under ``backbone`` in both: nothing moves.
    """
    return (
        _layout(found) == 1
        and expected.get(LAYOUT_KEY) == 2
        and ":" not in str(found.get("model_name", ""))
    )


def _is_model_root(node: Any) -> bool:
    # A model's variables in layout 2 (params, batch stats, their EMA, and the
    # optimiser's trees of the params' shape): ``backbone`` and, unless they hold
    # no such variable (BatchNorm statistics), ``heads``.
    return isinstance(node, dict) and "backbone" in node and set(node) <= {"backbone", "heads"}


def _to_layout_1(tree: Any) -> Any:
    """``tree`` (e.g. an abstract train state) with every model's variables in layout 1."""

    def flatten(node):
        if not _is_model_root(node):
            return node
        layers = dict(node["backbone"])
        if "heads" in layers:
            raise ValueError("a backbone with a top-level 'heads' has no layout 1 to restore")
        return {**layers, **({"heads": node["heads"]} if "heads" in node else {})}

    return jax.tree.map(flatten, tree, is_leaf=_is_model_root)


def _from_layout_1(like: Any, tree: Any) -> Any:
    """``tree``, restored in layout 1 (`_to_layout_1` of ``like``), in ``like``'s layout 2."""

    def nest(node, old):
        if not _is_model_root(node):
            return old
        nested = {"backbone": {key: value for key, value in old.items() if key != "heads"}}
        return {**nested, **({"heads": old["heads"]} if "heads" in node else {})}

    return jax.tree.map(nest, like, tree, is_leaf=_is_model_root)


def check_compatible(found: dict[str, Any], expected: dict[str, Any], *, where: str) -> None:
    """Raises `IncompatibleCheckpointError` unless ``found``'s checkpoint fits ``expected``'s run.

    ``found``: the checkpoint's compatibility record; ``expected``: this run's
    (`muscle_jax.train.compatibility`). A checkpoint in a parameter layout
    this code cannot restore is refused in one line before anything else.
    """
    layouts = (_layout(found), expected.get(LAYOUT_KEY, _layout(found)))
    if layouts[0] != layouts[1] and layouts != (1, 2):
        raise IncompatibleCheckpointError(
            f"The checkpoint in {where} holds its model's parameters in layout {layouts[0]!r}, "
            f"and this muscle_jax restores layout {layouts[1]!r} (or 1, from before the layout "
            "was recorded): the layout changed between the muscle_jax that wrote it and this "
            "one. Start a new --workdir, or resume with the muscle_jax that wrote it."
        )
    mismatches = [
        f"{key}: checkpoint has {found.get(key)!r}, this run has {value!r}"
        for key, value in expected.items()
        if key != LAYOUT_KEY and found.get(key) != value
    ]
    if mismatches:
        raise IncompatibleCheckpointError(
            f"The checkpoint in {where} was written by an incompatible run ("
            + "; ".join(mismatches)
            + "). Use a new --workdir for this config, or the matching config to resume."
        )
