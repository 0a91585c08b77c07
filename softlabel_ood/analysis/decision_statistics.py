"""The statistics the claims are decided by (`claims.py`, `selective_claims.py`): a difference
between two grid entries paired by seed or with the seeds as independent samples, Spearman's rank
correlation, and the outcomes of a claim's parts combined into its verdict.

Paired by seed (`PairedComparison`): over the seeds both entries have, the differences
d_s = a_s - b_s; a difference counts when their mean exceeds the noise threshold
max(min_effect, std(d)) (sample std, ddof = 1) and every d_s has the same sign; with fewer than
min_seeds pairs the spread is unknown. Seeds as independent samples (`Comparison`): the
difference of the seed means against max(min_effect, sqrt(std_a² + std_b²)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from scipy import stats as scipy_stats

from softlabel_ood.analysis.metric_stats import Stat

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"


class NoiseRules(Protocol):
    """What a comparison reads of the claims' rules (`claims.ClaimRules`)."""

    min_effect: float  # smallest difference that counts (fraction)
    min_seeds: int  # seeds (or pairs of seeds) needed to know the spread


def pct(x: float) -> str:
    """A fraction in percent (or points), two decimals."""
    return f"{100 * x:.2f}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """a - b against the noise threshold max(min_effect, sqrt(std_a² + std_b²))."""

    difference: float
    threshold: float  # NaN when a seed spread is unknown

    @property
    def direction(self) -> int:
        """+1: a > b beyond noise; -1: a < b beyond noise; 0: within noise or unknown."""
        if math.isnan(self.threshold) or math.isnan(self.difference):
            return 0
        if self.difference > self.threshold:
            return 1
        if self.difference < -self.threshold:
            return -1
        return 0

    def text(self) -> str:
        if math.isnan(self.threshold):
            return f"difference {pct(self.difference)}, noise threshold unknown"
        return f"difference {pct(self.difference)}, noise threshold {pct(self.threshold)}"


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """a - b paired by seed: the per-seed differences against max(min_effect, std of them)."""

    differences: tuple[tuple[int, float], ...]  # (seed, a_seed - b_seed), seeds both have
    min_effect: float
    min_seeds: int

    @property
    def stat(self) -> Stat:
        """The per-seed differences, as mean and sample std like any per-seed quantity."""
        return Stat(tuple(d for _, d in self.differences))

    @property
    def n(self) -> int:
        return self.stat.n

    @property
    def mean(self) -> float:
        return self.stat.mean

    @property
    def std(self) -> float:
        return self.stat.std

    @property
    def threshold(self) -> float:
        """NaN when there are fewer than min_seeds pairs (the spread is unknown)."""
        if self.n < max(self.min_seeds, 1):
            return math.nan
        return max(self.min_effect, self.std if self.n >= 2 else 0.0)

    @property
    def direction(self) -> int:
        """+1: a > b beyond noise with every seed's difference positive; -1 the mirror; else 0."""
        if math.isnan(self.threshold):
            return 0
        if self.mean > self.threshold and all(v > 0 for v in self.stat.values):
            return 1
        if self.mean < -self.threshold and all(v < 0 for v in self.stat.values):
            return -1
        return 0

    def brief(self) -> str:
        """The mean ± std of the differences, the threshold and the signs, in one phrase."""
        spread = "" if self.n < 2 else f" ± {pct(self.std)}"
        threshold = "unknown" if math.isnan(self.threshold) else pct(self.threshold)
        return (f"{100 * self.mean:+.2f}{spread} points (noise threshold {threshold}, "
                f"seeds {self.signs or '–'})")

    @property
    def signs(self) -> str:
        return "".join("+" if d > 0 else "−" if d < 0 else "0" for _, d in self.differences)

    def text(self) -> str:
        per_seed = ", ".join(f"seed {seed}: {pct(d):s}" for seed, d in self.differences)
        signs = self.signs
        spread = "" if self.n < 2 else f" ± {pct(self.std)}"
        threshold = ("unknown" if math.isnan(self.threshold) else pct(self.threshold))
        return (f"paired over {self.n} seed(s) ({per_seed}): mean difference "
                f"{pct(self.mean)}{spread}, signs {signs or '–'}, noise threshold {threshold}")


def compare_paired(a: dict[int, float], b: dict[int, float],
                   rules: NoiseRules) -> PairedComparison:
    """a - b over the seeds present in both ({seed: value})."""
    seeds = sorted(set(a) & set(b))
    return PairedComparison(tuple((s, a[s] - b[s]) for s in seeds), rules.min_effect,
                            rules.min_seeds)


def compare(a: Stat, b: Stat, rules: NoiseRules) -> Comparison:
    if min(a.n, b.n) < max(rules.min_seeds, 1):
        return Comparison(a.mean - b.mean, math.nan)
    spread = math.sqrt(a.std**2 + b.std**2) if min(a.n, b.n) >= 2 else 0.0
    return Comparison(a.mean - b.mean, max(rules.min_effect, spread))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their average rank); NaN if either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    # Checked here so that a sweep with one point or a flat metric is NaN without scipy's warning.
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(scipy_stats.spearmanr(x, y).statistic)


def part_outcome(direction: int, want: int) -> int:
    """+1 when a comparison's direction is the wanted one, -1 when it is the other, 0 else."""
    return 0 if direction == 0 else (1 if direction == want else -1)


def combine_outcomes(outcomes: Sequence[int]) -> str:
    if any(o < 0 for o in outcomes):
        return NOT_SUPPORTED
    if outcomes and all(o > 0 for o in outcomes):
        return SUPPORTED
    return INCONCLUSIVE
