"""SIGTERM/SIGINT as a request to checkpoint and stop, checked between steps.

Preemptible TPUs and cluster schedulers send SIGTERM shortly before they
kill a job. Raising inside the handler could interrupt a checkpoint write;
instead the handler only sets a flag that the train loop reads between
steps, where the state is consistent. The loop dispatches no step ahead
of the running one on a CPU (one on an accelerator), so a stop waits for
that step and the checkpoint. A second SIGINT (Ctrl-C twice) quits at
once, without the checkpoint.

With several processes every process must stop at the same step, or the
others would wait forever in the next step's collectives. There the
signal is left to JAX's distributed runtime: a SIGTERM that reaches any
process is announced to all through the coordination service, and
`multihost_utils.reached_preemption_sync_point` turns true on every process
at the same step. SIGINT is not caught (launch/local.sh turns Ctrl-C into a
SIGTERM for every process).
"""

import contextlib
import signal
import threading

from absl import logging


class StopRequest:
    """Whether to checkpoint and stop after a step; poll `should_stop` once per step."""

    def __init__(self, *, multi_process: bool = False):
        self._event = threading.Event()
        self._multi_process = multi_process
        self.signal_name: str | None = None

    def should_stop(self, step: int) -> bool:
        """True after a stop request; with several processes, at the same ``step`` on all."""
        if self._multi_process:
            from jax.experimental import multihost_utils  # Deferred: single runs need no JAX.

            if not self._event.is_set() and multihost_utils.reached_preemption_sync_point(step):
                self.signal_name = "SIGTERM"
                logging.warning(
                    "A process received SIGTERM: every process saves a checkpoint at step %d "
                    "and stops.",
                    step,
                )
                self._event.set()
        return self._event.is_set()

    def _handle(self, signum, _frame):
        if signum == signal.SIGINT and self._event.is_set():
            # A second Ctrl-C: quit now, as Python's own handler would. A checkpoint
            # being written is never read half-done (Orbax renames it when complete).
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        logging.warning(
            "Received %s: saving a checkpoint and stopping after this step%s.",
            self.signal_name,
            " (Ctrl-C again quits without it)" if signum == signal.SIGINT else "",
        )
        self._event.set()


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT), *, multi_process: bool = False):
    """Installs the handlers for the duration of training, then restores the old ones.

    With ``multi_process`` nothing is installed: JAX's preemption notifier
    handles SIGTERM (see the module docstring).
    """
    request = StopRequest(multi_process=multi_process)
    if multi_process or threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread.
        yield request
        return
    previous = {sig: signal.signal(sig, request._handle) for sig in signals}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
