"""SIGTERM/SIGINT as a request to checkpoint and stop, checked between steps.

Preemptible TPUs and cluster schedulers send SIGTERM shortly before they
kill a job. Raising inside the handler could interrupt a checkpoint write;
instead the handler only sets a flag that the train loop reads between
steps, where the state is consistent.
"""

import contextlib
import signal
import threading

from absl import logging


class StopRequest:
    """Set by SIGTERM or SIGINT while installed; the loop polls `requested`."""

    def __init__(self):
        self._event = threading.Event()
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def _handle(self, signum, _frame):
        self.signal_name = signal.Signals(signum).name
        logging.warning("Received %s: saving a checkpoint and stopping.", self.signal_name)
        self._event.set()


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Installs the handlers for the duration of training, then restores the old ones."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread.
        yield request
        return
    previous = {sig: signal.signal(sig, request._handle) for sig in signals}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
