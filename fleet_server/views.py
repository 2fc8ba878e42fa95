"""Read-only views the operator API and the web console share: a device with its history, the
releases with what their manifests say, an experiment's latency over time, the fleet summary.

Each is a plain function over the :class:`~.store.Store` (every query is a store method), so
the JSON API and the console show the same figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .experiments import arm_telemetry, experiment
from .store import Store

__all__ = [
    "device_detail",
    "experiment_series",
    "filter_devices",
    "fleet_summary",
    "release_details",
    "validation_summary",
]


def device_detail(store: Store, device: str) -> dict[str, Any]:
    """One device: tags, presence, last report, targets, and its history (the rollouts it took
    part in, every failure it reported with its reason code, its newest telemetry windows).

    Raises:
        NotFoundError: unknown device.
    """
    dev = store.device(device)
    return {
        "id": dev.id,
        "tags": dict(dev.tags),
        "presence": dev.presence,
        "reported": dict(dev.reported),
        "reported_at": dev.reported_at,
        "desired_seq": dev.desired_seq,
        "targets": [t.__dict__ for t in store.targets(dev.id)],
        "installs": store.device_installs(dev.id),
        "failures": store.device_failures_of(dev.id),
        "telemetry": store.device_telemetry(dev.id),
    }


def _signers(envelope: Mapping[str, Any]) -> list[str]:
    return [str(s.get("keyid", "")) for s in envelope.get("signatures") or []]


def _ratio(before: Any, after: Any) -> float | None:
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)) or not before:
        return None
    return after / before


def validation_summary(validation: Mapping[str, Any]) -> dict[str, Any]:
    """The converter's figures from a manifest's ``validation``: converted / original size and
    p50 latency, accuracy drop (or top-1 disagreement) in points. Missing figures are None."""
    orig = validation.get("original") or {}
    conv = validation.get("converted") or {}
    lat_o = (orig.get("latency_ms") or {}).get("p50_ms")
    lat_c = (conv.get("latency_ms") or {}).get("p50_ms")
    return {
        "size_ratio": _ratio(orig.get("size_bytes"), conv.get("size_bytes")),
        "latency_p50_ratio": _ratio(lat_o, lat_c),
        "accuracy_drop_points": validation.get("accuracy_drop_points"),
        "disagreement_points": validation.get("disagreement_points"),
    }


def release_details(store: Store) -> list[dict[str, Any]]:
    """Every release (newest first per model) with its signers, target, precision, format and
    the converter's validation figures from the manifest."""
    out = []
    for row in store.releases():
        rel = store.release(row["model"], row["version"])
        manifest = rel["manifest"]
        out.append(
            {
                **row,
                "signers": _signers(rel["envelope"]),
                "format": manifest.get("format"),
                "target": manifest.get("target"),
                "precision": manifest.get("precision"),
                "validation": validation_summary(manifest.get("validation") or {}),
            }
        )
    return out


def _series(rows: Iterable[Sequence[Any]]) -> dict[str, list[float | None]]:
    """Telemetry rows ``(device, window_ts, count, errors, p50, p95, p99)`` -> one point per
    window start (rounded to the second), request-weighted over the devices."""
    acc: dict[float, list[float]] = {}
    for _dev, ts, count, _errors, p50, p95, p99 in rows:
        n = int(count)
        if n <= 0 or p50 is None:
            continue
        a = acc.setdefault(float(round(float(ts))), [0.0, 0.0, 0.0, 0.0])
        a[0] += n
        a[1] += float(p50) * n
        a[2] += float(p95 if p95 is not None else p50) * n
        a[3] += float(p99 if p99 is not None else p95 if p95 is not None else p50) * n
    times = sorted(acc)
    return {
        "t": list(times),
        "p50": [acc[t][1] / acc[t][0] for t in times],
        "p95": [acc[t][2] / acc[t][0] for t in times],
        "p99": [acc[t][3] / acc[t][0] for t in times],
        "requests": [acc[t][0] for t in times],
    }


def experiment_series(store: Store, eid: int) -> dict[str, Any]:
    """Each arm's latency percentiles over time (the windows :func:`~.experiments.report`
    counts), for the console's chart.

    Raises:
        NotFoundError: no such experiment.
    """
    exp = experiment(store, eid)
    arms = {}
    for arm in ("a", "b"):
        arms[arm] = {"version": exp[arm], **_series(arm_telemetry(store, exp, arm))}
    return {"experiment": eid, "arms": arms}


def fleet_summary(devices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over :meth:`~.server.FleetServer.device_list` rows: by presence, by install
    state and by active version (per model)."""
    presence = Counter(str(d["presence"]) for d in devices)
    states: Counter[tuple[str, str]] = Counter()
    versions: Counter[tuple[str, str]] = Counter()
    for d in devices:
        for model, status in (d.get("models") or {}).items():
            states[(model, str(status.get("state") or "none"))] += 1
            active = status.get("active")
            versions[(model, "none" if active is None else f"v{active}")] += 1
    return {
        "devices": len(devices),
        "presence": dict(sorted(presence.items())),
        "states": [{"model": m, "state": s, "devices": n} for (m, s), n in sorted(states.items())],
        "versions": [
            {"model": m, "version": v, "devices": n} for (m, v), n in sorted(versions.items())
        ],
    }


def filter_devices(
    devices: Sequence[Mapping[str, Any]],
    tags: Mapping[str, str] | None = None,
    state: str | None = None,
) -> list[Mapping[str, Any]]:
    """The :meth:`~.server.FleetServer.device_list` rows that carry every tag in ``tags`` and
    whose presence (``online``, ``offline``) or a model's install state (``ACTIVE``,
    ``FAILED``, ...) is ``state`` (case-insensitive)."""
    wanted = (state or "").strip().lower()
    out = []
    for d in devices:
        if tags and any(d["tags"].get(k) != v for k, v in tags.items()):
            continue
        if wanted:
            seen = {str(d["presence"]).lower()}
            seen.update(str(s.get("state")).lower() for s in (d.get("models") or {}).values())
            if wanted not in seen:
                continue
        out.append(d)
    return out
