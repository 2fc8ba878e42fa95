"""Experiment statistics: t quantiles, intervals and verdicts on constructed telemetry."""

from __future__ import annotations

import random

import pytest
from edgeserve.fleet_server.stats import MinEffect, Window, compare, summarize, t_quantile


@pytest.mark.parametrize(
    ("df", "exact"),
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (5, 2.5706), (10, 2.2281), (30, 2.0423)],
)
def test_t_quantile_matches_tables(df: int, exact: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(exact, rel=2e-3)


def windows(n: int, p50: float, err_rate: float, seed: int, count: int = 200) -> list[Window]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        lat = p50 + rng.gauss(0, 0.3)
        errors = sum(rng.random() < err_rate for _ in range(count))
        out.append(Window(count, errors, lat, lat * 1.8, lat * 2.5))
    return out


def test_summary_weights_percentiles_by_requests() -> None:
    s = summarize(3, [Window(100, 1, 10.0, 20.0, 30.0), Window(300, 3, 20.0, 40.0, 50.0)])
    assert (s.requests, s.errors, s.windows) == (400, 4, 2)
    assert s.p50_ms == pytest.approx(17.5) and s.error_rate == pytest.approx(0.01)


def test_faster_b_wins() -> None:
    result = compare((3, windows(20, 10.0, 0.01, 1)), (4, windows(20, 8.0, 0.01, 2)))
    assert result.verdict == "b better"
    lo, hi = result.latency_ci_ms
    assert lo < -2.0 < hi < 0  # the true difference is -2 ms


def test_more_errors_in_b_makes_a_better() -> None:
    result = compare((3, windows(20, 10.0, 0.01, 3)), (4, windows(20, 8.0, 0.10, 4)))
    assert result.verdict == "a better" and result.error_rate_p < 1e-6


def test_same_distribution_is_no_difference() -> None:
    result = compare((3, windows(20, 10.0, 0.01, 5)), (4, windows(20, 10.0, 0.01, 6)))
    assert result.verdict == "no difference yet"
    lo, hi = result.latency_ci_ms
    assert lo < 0 < hi


def test_too_little_data_is_no_difference() -> None:
    result = compare((3, windows(1, 10.0, 0.0, 7)), (4, windows(1, 5.0, 0.0, 8)))
    assert result.verdict == "no difference yet" and "need" in result.why


@pytest.mark.parametrize(
    ("effect", "verdict"),
    [
        (MinEffect(ms=0.5), "no practical difference"),  # 0.2 ms faster: below 0.5 ms
        (MinEffect(pct=5.0), "no practical difference"),  # 5 % of 10 ms = 0.5 ms
        (MinEffect(ms=0.1), "b better"),
        (MinEffect(pct=1.0), "b better"),  # 0.1 ms
        (None, "b better"),
    ],
    ids=["0.5ms", "5pct", "0.1ms", "1pct", "none"],
)
def test_min_effect_turns_a_negligible_win_into_no_practical_difference(
    effect: MinEffect | None, verdict: str
) -> None:
    a = [Window(1000, 0, 10.0 + 0.01 * (i % 3), 18.0, 25.0) for i in range(30)]
    b = [Window(1000, 0, 9.8 + 0.01 * (i % 3), 18.0, 25.0) for i in range(30)]
    result = compare((3, a), (4, b), min_effect=effect)
    _lo, hi = result.latency_ci_ms
    assert hi < 0  # statistically clear either way
    assert result.verdict == verdict, result.why


def test_min_effect_parses_ms_and_percent() -> None:
    from edgeserve.fleet_server.api import min_effect

    from edgeserve.errors import ConfigError

    assert min_effect("0.5ms") == MinEffect(ms=0.5)
    assert min_effect("2 ms") == MinEffect(ms=2.0)
    assert min_effect("5%") == MinEffect(pct=5.0)
    for bad in ("5", "fast", "-1ms"):
        with pytest.raises(ConfigError, match="not a latency"):
            min_effect(bad)
