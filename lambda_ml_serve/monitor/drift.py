"""Compare captured rows and predictions with the reference profile: PSI, KS, chi-squared, missing, unknown.

PSI (population stability index) over the profile's bins is the headline figure: below 0.1 the
distribution is stable, 0.1-0.2 it moved, above 0.2 it shifted (the usual reading; the threshold is
the command's ``--threshold``). KS (numeric) and chi-squared (categorical) come with their p-values,
which with thousands of rows flag tiny shifts too: they are reported, PSI decides.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lambda_ml_serve.monitor.profile import (
    NUMERIC,
    OTHER,
    PERCENTILES,
    count_categories,
    numeric_values,
    prediction_values,
)

#: PSI above this is drift (the command's default ``--threshold``).
DEFAULT_THRESHOLD = 0.2
#: A change of the missing rate by this much (absolute) is flagged.
MISSING_CHANGE = 0.05
#: A share of unknown categories at least this large is flagged.
UNKNOWN_SHARE = 0.01
#: Empty bins would make PSI infinite: shares are floored at this.
EPSILON = 1e-4


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index of two share vectors over the same bins."""
    total = 0.0
    for r, c in zip(reference, current, strict=True):
        r, c = max(r, EPSILON), max(c, EPSILON)
        total += (c - r) * math.log(c / r)
    return total


def ks_against_percentiles(present: np.ndarray, percentiles: Sequence[float]) -> tuple[float, float]:
    """One-sample KS statistic and asymptotic p-value against the reference CDF the percentiles trace."""
    if len(present) == 0 or len(percentiles) == 0:
        return 0.0, 1.0
    xs = np.sort(present)
    reference = np.asarray(percentiles)
    levels = np.asarray(PERCENTILES, dtype=float) / 100
    # The reference CDF at each point, and just below it: they differ where percentiles repeat (a
    # value the training data held many times, as a 0/1 feature's), which is a jump of the CDF.
    interpolated = np.interp(xs, reference, levels, left=0.0, right=1.0)
    upper = np.searchsorted(reference, xs, side="right") / len(reference)
    lower = np.searchsorted(reference, xs, side="left") / len(reference)
    jump = upper > lower + 1 / len(reference)
    at = np.where(jump, upper, interpolated)
    below = np.where(jump, lower, interpolated)
    n = len(xs)
    ecdf_at = np.searchsorted(xs, xs, side="right") / n  # the captured CDF at each point (ties counted)
    ecdf_below = np.searchsorted(xs, xs, side="left") / n  # and just below it
    statistic = float(max(np.max(np.abs(ecdf_at - at)), np.max(np.abs(below - ecdf_below))))
    return statistic, _kolmogorov_p(statistic, n)


def _kolmogorov_p(d: float, n: int) -> float:
    if d <= 0:
        return 1.0
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    total = sum(2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, total)))


def chi_squared(reference: Mapping[str, float], counts: Mapping[str, int]) -> tuple[float, float]:
    """Chi-squared statistic and p-value of observed category counts against the reference shares."""
    from scipy.special import gammaincc

    n = sum(counts.values())
    if n == 0 or not reference:
        return 0.0, 1.0
    statistic = 0.0
    for category, share in reference.items():
        expected = max(share, EPSILON) * n
        statistic += (counts.get(category, 0) - expected) ** 2 / expected
    unknown = sum(v for k, v in counts.items() if k not in reference)
    if unknown:
        statistic += unknown**2 / (EPSILON * n)
    dof = max(1, len(reference) - 1 + (1 if unknown else 0))
    return float(statistic), float(gammaincc(dof / 2, statistic / 2))


@dataclass
class FeatureDrift:
    """One feature's (or the predictions') comparison."""

    name: str
    kind: str
    rows: int
    psi: float
    missing_rate: float
    reference_missing_rate: float
    test: str
    statistic: float
    p_value: float
    #: Bin labels with the reference's and the captured shares (what the report plots).
    bins: list[str] = field(default_factory=list)
    reference_shares: list[float] = field(default_factory=list)
    current_shares: list[float] = field(default_factory=list)
    unknown_share: float = 0.0
    unknown_categories: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.flags)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "rows": self.rows,
            "psi": round(self.psi, 6),
            "missing_rate": round(self.missing_rate, 6),
            "reference_missing_rate": round(self.reference_missing_rate, 6),
            "test": self.test,
            "statistic": round(self.statistic, 6),
            "p_value": self.p_value,
            "bins": self.bins,
            "reference_shares": [round(s, 6) for s in self.reference_shares],
            "current_shares": [round(s, 6) for s in self.current_shares],
            "unknown_share": round(self.unknown_share, 6),
            "unknown_categories": self.unknown_categories[:20],
            "flags": self.flags,
            "drifted": self.drifted,
        }


@dataclass
class DriftReport:
    """Every feature's comparison, the predictions', and the verdict at ``threshold``."""

    model: str
    version: str | None
    rows: int
    threshold: float
    features: list[FeatureDrift]
    predictions: FeatureDrift | None
    sources: list[str] = field(default_factory=list)
    records: int = 0

    @property
    def drifted(self) -> list[str]:
        """Names of what drifted (features, and ``predictions``)."""
        found = [f.name for f in self.features if f.drifted]
        if self.predictions is not None and self.predictions.drifted:
            found.append("predictions")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "records": self.records,
            "rows": self.rows,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "features": {f.name: f.to_json() for f in self.features},
            "predictions": self.predictions.to_json() if self.predictions else None,
            "sources": self.sources,
        }


def _bin_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"< {edges[0]:.4g}"]
    labels += [f"{lo:.4g} to {hi:.4g}" for lo, hi in itertools.pairwise(edges)]
    return [*labels, f"≥ {edges[-1]:.4g}"]


def _flags(drift: FeatureDrift, threshold: float) -> list[str]:
    flags = []
    if drift.psi >= threshold:
        flags.append(f"PSI {drift.psi:.2f} ≥ {threshold:g}")
    change = drift.missing_rate - drift.reference_missing_rate
    if abs(change) >= MISSING_CHANGE:
        flags.append(f"missing {drift.reference_missing_rate:.1%} → {drift.missing_rate:.1%}")
    if drift.unknown_share >= UNKNOWN_SHARE:
        flags.append(f"unknown categories {drift.unknown_share:.1%}")
    return flags


def compare_numeric(name: str, reference: Mapping[str, Any], values: Sequence[Any], threshold: float) -> FeatureDrift:
    present, missing = numeric_values(values)
    total = len(present) + missing
    edges = reference.get("edges") or []
    if len(present):
        counts = np.bincount(np.searchsorted(np.asarray(edges), present, side="right"), minlength=len(edges) + 1)
        shares = [float(c) / len(present) for c in counts]
    else:
        shares = [0.0] * (len(edges) + 1)
    reference_shares = list(reference.get("shares") or [1.0])
    statistic, p_value = ks_against_percentiles(present, reference.get("percentiles") or [])
    drift = FeatureDrift(
        name=name,
        kind=NUMERIC,
        rows=total,
        psi=psi(reference_shares, shares) if len(present) else 0.0,
        missing_rate=missing / total if total else 0.0,
        reference_missing_rate=float(reference.get("missing_rate", 0.0)),
        test="KS",
        statistic=statistic,
        p_value=p_value,
        bins=_bin_labels(edges),
        reference_shares=reference_shares,
        current_shares=shares,
    )
    drift.flags = _flags(drift, threshold)
    return drift


def compare_categorical(
    name: str, reference: Mapping[str, Any], values: Sequence[Any], threshold: float
) -> FeatureDrift:
    shares_ref: dict[str, float] = dict(reference.get("shares") or {})
    counts, missing = count_categories(values)
    present = sum(counts.values())
    total = present + missing
    # Categories beyond the profile's kept ones were folded into OTHER there: fold them here too.
    known = set(shares_ref)
    unknown = {k: v for k, v in counts.items() if k not in known and OTHER not in known}
    folded = Counter({k: v for k, v in counts.items() if k in known})
    if OTHER in known:
        folded[OTHER] += sum(v for k, v in counts.items() if k not in known)
    labels = sorted(known) + (["(unknown)"] if unknown else [])
    current = [folded.get(k, 0) / present if present else 0.0 for k in sorted(known)]
    reference_shares = [shares_ref[k] for k in sorted(known)]
    if unknown:
        current.append(sum(unknown.values()) / present)
        reference_shares.append(0.0)
    statistic, p_value = chi_squared(shares_ref, counts)
    drift = FeatureDrift(
        name=name,
        kind="categorical",
        rows=total,
        psi=psi(reference_shares, current) if present else 0.0,
        missing_rate=missing / total if total else 0.0,
        reference_missing_rate=float(reference.get("missing_rate", 0.0)),
        test="chi-squared",
        statistic=statistic,
        p_value=p_value,
        bins=labels,
        reference_shares=reference_shares,
        current_shares=current,
        unknown_share=sum(unknown.values()) / present if present else 0.0,
        unknown_categories=sorted(unknown, key=lambda k: -unknown[k]),
    )
    drift.flags = _flags(drift, threshold)
    return drift


def compare(
    profile: Mapping[str, Any],
    columns: Mapping[str, Sequence[Any]],
    predictions: Sequence[Any] | None = None,
    *,
    model: str = "",
    version: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> DriftReport:
    """Compare captured ``columns`` (feature name -> values) and ``predictions`` with ``profile``."""
    features = []
    rows = max((len(v) for v in columns.values()), default=0)
    for name, reference in profile["features"].items():
        values = columns.get(name, [None] * rows)
        compare_one = compare_numeric if reference["kind"] == NUMERIC else compare_categorical
        features.append(compare_one(name, reference, values, threshold))
    predicted = None
    if predictions is not None and profile.get("predictions"):
        reference = profile["predictions"]
        compare_one = compare_numeric if reference["kind"] == NUMERIC else compare_categorical
        predicted = compare_one("predictions", reference, prediction_values(list(predictions)), threshold)
    return DriftReport(model, version, rows, threshold, features, predicted)
