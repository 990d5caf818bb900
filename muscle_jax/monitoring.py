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


# The loop's time a step is measured over this many steps after the first (which
# waits for the compilation), then the run's length is projected from it.
PROJECTION_STEPS = 5
# A CPU run projected to last longer than this gets a line naming the smaller settings.
LONG_CPU_RUN_SECONDS = 3 * 3600


def format_duration(seconds: float) -> str:
    """``2 d 3 h``, ``3 h 10 min``, ``12 min`` or ``40 s``."""
    seconds = max(round(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{secs} s"


def run_time_projection(
    *, seconds_per_step: float, steps_left: int, config, platform: str
) -> tuple[str, str | None]:
    """(the projection line, advice for a long CPU run or None), from the measured step time.

    The advice names the settings that shorten the run; the run goes on
    either way (a long run may be what was meant).
    """
    projected = seconds_per_step * steps_left
    line = (
        f"projected: {format_duration(projected)} for the {steps_left} steps left (of "
        f"{config.total_steps}) at {seconds_per_step:.3g} s/step, evaluations and "
        "checkpoints aside"
    )
    if platform != "cpu" or projected <= LONG_CPU_RUN_SECONDS:
        return line, None
    advice = (
        f"this run would take {format_duration(projected)} on the CPU, more than "
        f"{format_duration(LONG_CPU_RUN_SECONDS)}. For a result sooner: fewer steps "
        f"(--config.total_steps, {config.total_steps} now), a smaller batch "
        f"(--config.data.batch_size, {config.data.batch_size} now; or "
        f"data.unlabeled_ratio, {config.data.unlabeled_ratio}) or a smaller model "
        f"(--config.model.name, {config.model.name} now; small_cnn is configs/digits.py's). "
        "The run goes on."
    )
    return line, advice
