"""Comparing two groups of runs (e.g. the test accuracies of seeds 1-3 of two optimizers).

Welch's t-test (unequal variances) through scipy, because a handful of seeds per group is the
usual case here and nothing says two optimizers spread alike.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) in the units of the inputs, with Welch's t-test.

    ``low``/``high``: the two-sided confidence interval of the difference at ``level``;
    ``p``: the two-sided p-value of "no difference"; ``df``: Welch-Satterthwaite degrees of
    freedom. The test fields are None when either group has one value or both have no spread.
    """
    diff: float
    low: float | None = None
    high: float | None = None
    t: float | None = None
    df: float | None = None
    p: float | None = None
    level: float = 0.95

    @property
    def tested(self) -> bool:
        return self.p is not None

    @property
    def separated(self) -> bool:
        """True when the confidence interval excludes 0."""
        return self.tested and (self.low > 0 or self.high < 0)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Difference:
    """mean(a) - mean(b) and Welch's t-test of it (see ``Difference``)."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2 or statistics.variance(a) + statistics.variance(b) == 0:
        return Difference(diff, level=level)
    from scipy import stats

    result = stats.ttest_ind(list(a), list(b), equal_var=False)
    ci = result.confidence_interval(level)
    values = (float(ci.low), float(ci.high), float(result.statistic), float(result.df), float(result.pvalue))
    if not all(math.isfinite(v) for v in values):
        return Difference(diff, level=level)
    return Difference(diff, *values, level=level)
