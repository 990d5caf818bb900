"""Summary statistics over seeds: mean ± standard deviation, and paired differences.

Two methods run on the same seeds share their labeled subset, initialisation
and data order, so their difference is compared seed by seed (a paired
design): the spread of the per-seed differences, not of each method's
accuracy, decides whether a gain is distinguishable from noise.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

# The t quantile is scipy.special's stdtrit (what scipy.stats.t.ppf computes):
# scipy.stats takes ~1.4 s to import, paid by every suite command.
from scipy import special


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof 1; NaN for one value) of ``n`` values."""

    mean: float
    std: float
    n: int

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean * scale:.{digits}f} (n=1)"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences ``a - b`` with its two-sided confidence interval.

    The interval is Student's t: ``mean ± t_{1-alpha/2, n-1} * sd / sqrt(n)``,
    NaN-wide for fewer than two pairs. ``seeds`` are the seeds both sides had.
    """

    mean: float
    low: float
    high: float
    n: int
    seeds: tuple[int, ...]

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        if self.n == 0:
            return "–"
        mean = f"{self.mean * scale:+.{digits}f}"
        if self.n == 1:
            return f"{mean} (n=1, no interval)"
        return f"{mean} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"

    @property
    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)


def summarise(values: Sequence[float]) -> Summary:
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return Summary(float(values.mean()), std, int(values.size))


def paired_difference(
    a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95
) -> PairedDifference:
    """``a - b`` over the seeds present in both (dicts seed -> value)."""
    seeds = tuple(sorted(set(a) & set(b)))
    differences = np.array([a[seed] - b[seed] for seed in seeds], np.float64)
    n = differences.size
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, seeds)
    mean = float(differences.mean())
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, 1, seeds)
    quantile = special.stdtrit(n - 1, 0.5 + confidence / 2)
    half_width = quantile * differences.std(ddof=1) / math.sqrt(n)
    return PairedDifference(mean, mean - half_width, mean + half_width, n, seeds)
