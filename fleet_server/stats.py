"""Experiment statistics: per-arm summaries, confidence intervals and a verdict. Pure functions.

Inputs are telemetry windows (one per device, model version and period) carrying a request
count, an error count and latency percentiles. Devices do not ship raw latencies, so:

- an arm's latency percentiles are the request-weighted means of its windows' percentiles;
- the latency difference (b - a) gets a Welch t interval over per-window p50 latencies
  (Welch 1947; Welch-Satterthwaite degrees of freedom), each window being one sample;
- the error-rate difference gets a Wald interval and a two-proportion z-test.

Verdict: if the error-rate interval excludes 0, the arm with fewer errors is better; otherwise
if the latency interval excludes 0, the faster arm is better, unless the difference is smaller
than the minimum practical effect (:class:`MinEffect`): then ``no practical difference``;
otherwise ``no difference yet``. Both arms need ``min_requests`` requests and two windows
before any verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, variance
from typing import Any

__all__ = [
    "NO_PRACTICAL_DIFFERENCE",
    "ArmSummary",
    "Comparison",
    "MinEffect",
    "Window",
    "compare",
    "summarize",
    "t_quantile",
]

A_BETTER, B_BETTER, NO_DIFFERENCE = "a better", "b better", "no difference yet"
NO_PRACTICAL_DIFFERENCE = "no practical difference"


@dataclass(frozen=True)
class MinEffect:
    """The smallest p50 latency difference that matters: ``ms`` milliseconds, or ``pct``
    percent of arm a's p50 (``experiment report --min-effect 0.5ms`` or ``5%``)."""

    ms: float | None = None
    pct: float | None = None

    def __post_init__(self) -> None:
        if (self.ms is None) == (self.pct is None):
            raise ValueError("min effect: give ms or pct")
        if (self.ms or 0) < 0 or (self.pct or 0) < 0:
            raise ValueError("min effect: must be >= 0")

    def threshold_ms(self, a_p50_ms: float | None) -> float | None:
        """The threshold in milliseconds (None when it is relative and a has no latency)."""
        if self.ms is not None:
            return self.ms
        return None if a_p50_ms is None else a_p50_ms * (self.pct or 0.0) / 100.0

    def to_dict(self) -> dict[str, float | None]:
        """JSON form."""
        return {"ms": self.ms, "pct": self.pct}

    def __str__(self) -> str:
        return f"{self.ms:g} ms" if self.ms is not None else f"{self.pct:g}%"


@dataclass(frozen=True)
class Window:
    """One telemetry window of one device for one model version."""

    count: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class ArmSummary:
    """One arm: request and error counts, error rate, weighted latency percentiles."""

    version: int
    requests: int
    errors: int
    windows: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Comparison:
    """b versus a: differences with confidence intervals, p-value, verdict."""

    a: ArmSummary
    b: ArmSummary
    confidence: float
    latency_diff_ms: float | None
    latency_ci_ms: tuple[float, float] | None
    error_rate_diff: float | None
    error_rate_ci: tuple[float, float] | None
    error_rate_p: float | None
    verdict: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "confidence": self.confidence,
            "latency_p50_diff_ms": self.latency_diff_ms,
            "latency_p50_diff_ci_ms": list(self.latency_ci_ms) if self.latency_ci_ms else None,
            "error_rate_diff": self.error_rate_diff,
            "error_rate_diff_ci": list(self.error_rate_ci) if self.error_rate_ci else None,
            "error_rate_p_value": self.error_rate_p,
            "verdict": self.verdict,
            "why": self.why,
        }


def _weighted(windows: Sequence[Window], attr: str) -> float | None:
    pairs = [(getattr(w, attr), w.count) for w in windows if getattr(w, attr) is not None]
    total = sum(c for _, c in pairs)
    if not pairs or total <= 0:
        return None
    return sum(v * c for v, c in pairs) / total


def summarize(version: int, windows: Sequence[Window]) -> ArmSummary:
    """Aggregate one arm's windows."""
    requests = sum(w.count for w in windows)
    errors = sum(w.errors for w in windows)
    return ArmSummary(
        version=version,
        requests=requests,
        errors=errors,
        windows=len(windows),
        error_rate=errors / requests if requests else 0.0,
        p50_ms=_weighted(windows, "p50_ms"),
        p95_ms=_weighted(windows, "p95_ms"),
        p99_ms=_weighted(windows, "p99_ms"),
    )


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (no SciPy on the server).

    Cornish-Fisher expansion around the normal quantile (Abramowitz & Stegun 26.7.5); within
    0.2% of the exact value for df >= 3; closed forms below.
    """
    # Closed forms for 1 and 2 degrees of freedom, where the expansion is poor.
    if df <= 1.0:
        return math.tan(math.pi * (p - 0.5))
    if df <= 2.0:
        return (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
    z = NormalDist().inv_cdf(p)
    if math.isinf(df):
        return z
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _welch(a: Sequence[float], b: Sequence[float], confidence: float) -> tuple[float, float, float]:
    va, vb = variance(a) / len(a), variance(b) / len(b)
    diff = fmean(b) - fmean(a)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2, max(df, 1.0)) * se
    return diff, diff - half, diff + half


def compare(
    a: tuple[int, Sequence[Window]],
    b: tuple[int, Sequence[Window]],
    *,
    confidence: float = 0.95,
    min_requests: int = 100,
    min_effect: MinEffect | None = None,
) -> Comparison:
    """Compare arm b with arm a.

    Args:
        a: ``(version, windows)`` of arm a (the control).
        b: ``(version, windows)`` of arm b.
        confidence: two-sided confidence level of the intervals.
        min_requests: requests each arm needs before a verdict other than "no difference yet".
        min_effect: a latency difference below it is ``no practical difference``.

    Returns:
        The comparison with its verdict and the reason for it.
    """
    sa, sb = summarize(a[0], a[1]), summarize(b[0], b[1])
    lat_a = [w.p50_ms for w in a[1] if w.p50_ms is not None and w.count > 0]
    lat_b = [w.p50_ms for w in b[1] if w.p50_ms is not None and w.count > 0]
    lat = _welch(lat_a, lat_b, confidence) if len(lat_a) >= 2 and len(lat_b) >= 2 else None
    err_diff = err_ci = err_p = None
    if sa.requests and sb.requests:
        pa, pb = sa.error_rate, sb.error_rate
        err_diff = pb - pa
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        se = math.sqrt(pa * (1 - pa) / sa.requests + pb * (1 - pb) / sb.requests)
        err_ci = (err_diff - z * se, err_diff + z * se)
        pooled = (sa.errors + sb.errors) / (sa.requests + sb.requests)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / sa.requests + 1 / sb.requests))
        err_p = 1.0 if se0 == 0 else 2 * (1 - NormalDist().cdf(abs(err_diff) / se0))
    verdict, why = NO_DIFFERENCE, ""
    if min(sa.requests, sb.requests) < min_requests or lat is None:
        why = f"need {min_requests} requests and 2 telemetry windows per arm"
    elif err_ci is not None and err_diff is not None and (err_ci[0] > 0 or err_ci[1] < 0):
        verdict = A_BETTER if err_diff > 0 else B_BETTER
        why = f"error rate differs by {err_diff:+.4f} (p={err_p:.3g})"
    elif (lat[1] > 0 or lat[2] < 0) and (
        (threshold := None if min_effect is None else min_effect.threshold_ms(sa.p50_ms))
        is not None
        and abs(lat[0]) < threshold
    ):
        verdict = NO_PRACTICAL_DIFFERENCE
        why = (
            f"p50 latency differs by {lat[0]:+.3f} ms ({confidence:.0%} CI excludes 0), "
            f"below the minimum effect {min_effect} ({threshold:.3f} ms)"
        )
    elif lat[1] > 0 or lat[2] < 0:
        verdict = A_BETTER if lat[0] > 0 else B_BETTER
        why = f"p50 latency differs by {lat[0]:+.3f} ms ({confidence:.0%} CI excludes 0)"
    else:
        why = "both intervals include 0"
    return Comparison(
        a=sa,
        b=sb,
        confidence=confidence,
        latency_diff_ms=lat[0] if lat else None,
        latency_ci_ms=(lat[1], lat[2]) if lat else None,
        error_rate_diff=err_diff,
        error_rate_ci=err_ci,
        error_rate_p=err_p,
        verdict=verdict,
        why=why,
    )
