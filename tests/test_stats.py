"""lars_systemml.stats: Welch's comparison of two groups of runs, against the textbook formulas."""
import math
import statistics

import pytest
from scipy import stats as sps

from lars_systemml.stats import welch


def by_formula(a, b, level=0.95):
    """Welch-Satterthwaite by hand: difference, CI, t, df, two-sided p."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    diff = statistics.fmean(a) - statistics.fmean(b)
    q = sps.t.ppf(0.5 + level / 2, df)
    t = diff / se
    return diff, diff - q * se, diff + q * se, t, df, 2 * sps.t.sf(abs(t), df)


@pytest.mark.parametrize("a, b", [
    ([0.980, 0.981, 0.975], [0.90, 0.88, 0.91]),           # clearly apart
    ([0.9011, 0.8892, 0.9048], [0.9094, 0.8803, 0.9083]),   # overlapping
    ([0.5, 0.7], [0.6, 0.61, 0.59, 0.65]),                  # unequal sizes and spreads
])
def test_welch_matches_the_formulas(a, b):
    d = welch(a, b)
    want = by_formula(a, b)
    got = (d.diff, d.low, d.high, d.t, d.df, d.p)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    # the sign convention: a minus b, and the interval says so
    flipped = welch(b, a)
    assert flipped.diff == pytest.approx(-d.diff) and flipped.low == pytest.approx(-d.high)
    assert d.separated == (d.low > 0 or d.high < 0)


def test_welch_separates_only_when_the_interval_excludes_zero():
    assert welch([0.980, 0.981, 0.975], [0.90, 0.88, 0.91]).separated
    assert not welch([0.9011, 0.8892, 0.9048], [0.9094, 0.8803, 0.9083]).separated


@pytest.mark.parametrize("a, b", [([0.9], [0.8, 0.85]), ([0.9, 0.9], [0.8, 0.8])])
def test_one_value_or_no_spread_gives_the_difference_untested(a, b):
    d = welch(a, b)
    assert d.diff == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert not d.tested and not d.separated and d.low is None and d.p is None
