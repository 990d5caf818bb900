"""Training metrics kept on device between logging steps, and the progress line.

The train step's metrics are summed on device, so the host waits for the
device only at logging steps. Alongside the sums, the first step at which
each term was not finite is recorded, so a NaN is reported with its step
even though it is only seen at the next logging step.
"""

import datetime
import time

import jax
import jax.numpy as jnp
import numpy as np


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the term and the step."""


@jax.jit
def accumulate(sums, metrics, step):
    """Adds ``metrics`` of ``step`` into ``sums`` (from `empty_sums`), noting first non-finites."""
    first_bad = {
        key: jnp.where(
            (sums["first_nonfinite"][key] < 0) & ~jnp.isfinite(value),
            step,
            sums["first_nonfinite"][key],
        )
        for key, value in metrics.items()
    }
    totals = jax.tree.map(jnp.add, sums["totals"], metrics)
    return {"totals": totals, "first_nonfinite": first_bad, "count": sums["count"] + 1}


def empty_sums(metrics_shape: dict[str, jax.ShapeDtypeStruct]):
    return {
        "totals": {key: jnp.zeros((), jnp.float32) for key in metrics_shape},
        "first_nonfinite": {key: jnp.asarray(-1, jnp.int32) for key in metrics_shape},
        "count": jnp.zeros((), jnp.int32),
    }


def summarise(sums) -> dict[str, float]:
    """Means since the last call; raises `NonFiniteLossError` naming the first bad term."""
    host = jax.device_get(sums)
    bad = {key: int(step) for key, step in host["first_nonfinite"].items() if step >= 0}
    if bad:
        term, step = min(bad.items(), key=lambda item: item[1])
        raise NonFiniteLossError(
            f"Loss term {term!r} became non-finite at step {step} "
            f"(all non-finite terms and their first steps: {bad}). Training stopped; "
            "the latest checkpoint is the last one written before it. Lower the learning "
            "rate or the term weights, or check the data for NaNs."
        )
    count = max(int(host["count"]), 1)
    return {key: float(value) / count for key, value in host["totals"].items()}


class ProgressLine:
    """Formats ``step | images/s | ETA | loss terms`` from wall-clock deltas."""

    def __init__(self, *, total_steps: int, images_per_step: int, start_step: int):
        self._total = total_steps
        self._images = images_per_step
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def images_per_second(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self._last_step) * self._images / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        return rate

    def format(
        self,
        step: int,
        metrics: dict[str, float],
        rate: float,
        *,
        accuracy: float | None = None,
        all_terms: bool = False,
    ) -> str:
        """``step k/K | img/s | ETA | loss | test accuracy``; every term with ``all_terms``."""
        remaining = (self._total - step) * self._images / max(rate, 1e-9)
        eta = datetime.timedelta(seconds=int(remaining))
        line = f"step {step}/{self._total} | {rate:,.0f} img/s | ETA {eta}"
        if all_terms:
            terms = " ".join(
                f"{key}={value:.4g}" for key, value in metrics.items() if np.isfinite(value)
            )
            return f"{line} | {terms}"
        line += f" | loss {metrics.get('total', float('nan')):.4g}"
        if accuracy is not None:
            line += f" | test acc {accuracy:.4f} (EMA, last eval)"
        return line
