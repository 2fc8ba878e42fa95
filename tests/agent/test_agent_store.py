"""The model store and the telemetry buffer on real files."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from edgeserve.agent.serving.telemetry import TelemetryBuffer
from edgeserve.agent.store import ModelStore
from support.models import make_linear_bundle

from edgeserve.bundle import pack_bundle
from edgeserve.errors import BundleError, ConfigError, NotFoundError, StorageError


def test_agent_store_install_activate_previous_and_remove(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "state")
    first = store.install(make_linear_bundle(tmp_path / "b1", version=1).path)
    assert (first.name, first.version) == ("linear", 1)
    assert store.active_version("linear") == 1
    store.install(make_linear_bundle(tmp_path / "b2", version=2, seed=1).path, activate=False)
    assert store.versions("linear") == [1, 2]
    assert store.active_version("linear") == 1
    store.activate("linear", 2)
    assert (store.active_version("linear"), store.previous_active("linear")) == (2, 1)
    with pytest.raises(ConfigError, match=r"is active"):
        store.remove("linear", 2)
    store.remove("linear", 1)
    assert store.versions("linear") == [2]
    assert store.previous_active("linear") is None
    assert store.models() == ["linear"]


def test_agent_store_installs_a_tar_and_is_idempotent(tmp_path: Path) -> None:
    bundle = make_linear_bundle(tmp_path / "b1", version=3)
    tar = pack_bundle(bundle.path, tmp_path / "b1.tar")
    store = ModelStore(tmp_path / "state")
    assert store.install(tar).version == 3
    assert store.install(bundle.path).version == 3  # same contents: no-op
    other = make_linear_bundle(tmp_path / "other", version=3, seed=7)
    with pytest.raises(BundleError, match="different contents"):
        store.install(other.path)


def test_agent_store_refuses_a_corrupt_bundle_and_leaves_nothing(tmp_path: Path) -> None:
    bundle = make_linear_bundle(tmp_path / "b1", version=1)
    (bundle.path / "model.onnx").write_bytes(b"not the model")
    store = ModelStore(tmp_path / "state")
    with pytest.raises(BundleError, match=r"model\.onnx") as caught:
        store.install(bundle.path)
    # the message names the bundle given, not the store's temporary copy
    assert str(caught.value).startswith(f"{bundle.path}: ")
    assert ".install" not in str(caught.value)
    assert store.models() == []
    assert not any(p.name.startswith(".install") for p in store.root.rglob("*"))


def test_agent_store_recover_removes_leftovers_but_keeps_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "state")
    store.install(make_linear_bundle(tmp_path / "b1", version=1).path)
    # what a kill -9 in the middle of an install of version 2 leaves behind
    half = store.root / "linear" / ".install-2-999-1"
    shutil.copytree(store.path("linear", 1), half)
    (half / "model.onnx").write_bytes(b"half")
    (store.root / "linear" / ".state-999-1").write_text("{")
    removed = store.recover()
    assert {p.name for p in removed} == {".install-2-999-1", ".state-999-1"}
    assert store.versions("linear") == [1]
    assert store.active_version("linear") == 1


def test_agent_store_labels(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "state")
    store.install(make_linear_bundle(tmp_path / "b1", version=1).path)
    store.set_label("linear", "stable", 1)
    assert store.labels("linear") == {"stable": 1}
    with pytest.raises(NotFoundError):
        store.set_label("linear", "canary", 9)
    with pytest.raises(ConfigError):
        store.set_label("linear", "12", 1)
    store.set_label("linear", "stable", None)
    assert store.labels("linear") == {}
    state = json.loads((store.root / "linear" / "state.json").read_text())
    assert state["active"] == 1


def test_agent_telemetry_buffer_bounds_acks_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    buf = TelemetryBuffer(path, max_bytes=400)
    for i in range(20):
        buf.append({"i": i, "pad": "x" * 20})
    kept = buf.pending(100)
    assert kept and kept[-1][1]["i"] == 19
    assert buf.dropped == 20 - len(kept)
    assert buf.size_bytes <= 400
    ids = [i for i, _ in kept]
    assert ids == sorted(ids)
    buf.ack(ids[1])
    buf.close()
    again = TelemetryBuffer(path, max_bytes=400)
    assert [i for i, _ in again.pending(100)] == ids[2:]
    assert again.dropped == 20 - len(kept)
    again.append({"too_big": "y" * 1000})
    assert again.dropped == 21 - len(kept)
    again.close()


def test_agent_telemetry_buffer_opens_its_file_on_first_use(tmp_path: Path) -> None:
    """Creating the buffer does not create the file; the first append does, without SQLite
    (whose library would cost the agent idle RSS); a closed buffer stays closed."""
    import subprocess
    import sys

    path = tmp_path / "sub" / "t.jsonl"
    code = (
        "import sys\n"
        "from edgeserve.agent.serving.telemetry import TelemetryBuffer\n"
        f"buf = TelemetryBuffer({str(path)!r}, max_bytes=400)\n"
        "assert not buf.path.exists(), 'created before use'\n"
        "buf.append({'i': 0})\n"
        "buf.ack(1)\n"
        "buf.close()\n"
        "assert 'sqlite3' not in sys.modules, 'sqlite3 imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    path.unlink()
    buf = TelemetryBuffer(path, max_bytes=400)
    assert not path.exists()
    buf.append({"i": 1})
    assert path.exists() and buf.pending(10) == [(1, {"i": 1})]
    buf.close()
    with pytest.raises(StorageError, match="closed"):
        buf.append({"i": 2})
    again = TelemetryBuffer(path, max_bytes=400)
    assert again.size_bytes == len('{"i":1}') and len(again) == 1 and again.dropped == 0
    again.close()


def test_agent_telemetry_buffer_reports_an_unopenable_file_when_used(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.mkdir()  # a directory where the file should be: SQLite cannot open it
    buf = TelemetryBuffer(path, max_bytes=400)
    with pytest.raises(StorageError, match="cannot open telemetry buffer"):
        buf.append({"i": 1})
    buf.close()


def test_agent_telemetry_buffer_survives_kill9_mid_append(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "t.jsonl"
    writer = (
        "import sys, itertools\n"
        "from edgeserve.agent.serving.telemetry import TelemetryBuffer\n"
        f"buf = TelemetryBuffer({str(path)!r}, max_bytes=20000)\n"
        "for i in itertools.count():\n"
        "    buf.append({'i': i, 'pad': 'x' * 50})\n"
        "    if i == 300: print('ok', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ok"
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    buf = TelemetryBuffer(path, max_bytes=20000)
    records = buf.pending(10_000)
    values = [r["i"] for _, r in records]
    assert values and values == list(range(values[0], values[0] + len(values)))  # no holes
    assert buf.dropped == values[0]  # everything older was dropped for the bound, and counted
    assert buf.size_bytes <= 20000
    buf.append({"after": True})
    assert buf.pending(10_000)[-1][1] == {"after": True}
    buf.close()


def test_agent_telemetry_buffer_file_stays_bounded_with_and_without_acks(tmp_path: Path) -> None:
    """Dropped and acknowledged records are rewritten out of the journal, so neither an agent
    without fleet sync (nothing acked, the oldest dropped) nor one that delivers everything
    grows its file past about twice the bound; ids keep increasing across rewrites."""
    path = tmp_path / "t.jsonl"
    buf = TelemetryBuffer(path, max_bytes=2000)
    for i in range(5000):
        buf.append({"i": i, "pad": "x" * 50})
    kept = buf.pending(10_000)
    assert [r["i"] for _, r in kept] == list(range(5000 - len(kept), 5000))
    assert buf.dropped == 5000 - len(kept) and buf.size_bytes <= 2000
    assert path.stat().st_size <= 2 * 2000 + 65_536 + 200
    last = kept[-1][0]
    for i in range(5000):
        buf.append({"j": i, "pad": "y" * 50})
        buf.ack(buf.pending(10_000)[-1][0])
    assert len(buf) == 0 and buf.size_bytes == 0
    assert path.stat().st_size <= 65_536 + 200
    buf.append({"k": 1})
    ((rid, record),) = buf.pending(10)
    assert record == {"k": 1} and rid > last + 5000
    buf.close()
    again = TelemetryBuffer(path, max_bytes=2000)
    assert again.pending(10) == [(rid, {"k": 1})] and again.dropped == 5000 - len(kept)
    again.close()


def test_agent_telemetry_buffer_cuts_off_a_half_written_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    buf = TelemetryBuffer(path, max_bytes=2000)
    buf.append({"i": 1})
    buf.close()
    with path.open("ab") as f:  # what a writer killed inside its write would leave
        f.write(b'[2,{"i":2,"pa')
    again = TelemetryBuffer(path, max_bytes=2000)
    assert again.pending(10) == [(1, {"i": 1})]
    again.append({"i": 3})
    assert again.pending(10) == [(1, {"i": 1}), (2, {"i": 3})]
    again.close()
    assert path.read_bytes().endswith(b'[2,{"i":3}]\n')


def test_agent_telemetry_buffer_follows_a_rewrite_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    a, b = TelemetryBuffer(path, max_bytes=10**6), TelemetryBuffer(path, max_bytes=10**6)
    try:
        for i in range(1500):
            a.append({"i": i, "pad": "x" * 50})
        assert len(b) == 1500
        inode = path.stat().st_ino
        a.ack(1499)  # most of the journal is forgotten now: a rewrites it
        assert path.stat().st_ino != inode
        assert b.pending(10) == [(1500, {"i": 1499, "pad": "x" * 50})]
        b.append({"from": "b"})
        assert [r for _, r in a.pending(10)] == [{"i": 1499, "pad": "x" * 50}, {"from": "b"}]
    finally:
        a.close()
        b.close()


def test_agent_telemetry_buffer_refuses_an_sqlite_file_of_an_earlier_version(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "telemetry.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, body TEXT)")
        db.commit()
    before = path.read_bytes()
    buf = TelemetryBuffer(path, max_bytes=2000)
    with pytest.raises(StorageError, match="SQLite file of an earlier edgeserve"):
        buf.append({"i": 1})
    buf.close()
    assert path.read_bytes() == before


def test_agent_telemetry_buffer_on_a_full_disk_raises_and_keeps_what_it_had(
    tmp_path: Path,
) -> None:
    """A file-size limit stands in for a full disk: the append that does not fit raises
    StorageError, and every record before it is still there, whole, after a reopen."""
    import subprocess
    import sys

    path = tmp_path / "t.jsonl"
    code = (
        "import resource, signal\n"
        "from edgeserve.agent.serving.telemetry import TelemetryBuffer\n"
        "from edgeserve.errors import StorageError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))\n"
        f"buf = TelemetryBuffer({str(path)!r}, max_bytes=10**6)\n"
        "for i in range(1000):\n"
        "    try:\n"
        "        buf.append({'i': i, 'pad': 'x' * 50})\n"
        "    except StorageError as exc:\n"
        "        print(i, exc)\n"
        "        break\n"
        "try:\n"
        "    buf.append({'i': -1, 'pad': 'x' * 50})\n"
        "except StorageError:\n"
        "    print('still full')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    failed_at = int(first.split()[0])
    assert 0 < failed_at < 1000 and "telemetry buffer" in first and second == "still full"
    buf = TelemetryBuffer(path, max_bytes=10**6)
    assert [r["i"] for _, r in buf.pending(10_000)] == list(range(failed_at))
    buf.append({"i": failed_at})  # room again: appends go on after the last whole record
    assert buf.pending(10_000)[-1] == (failed_at + 1, {"i": failed_at})
    buf.close()


def test_agent_telemetry_buffer_skips_a_line_damaged_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    buf = TelemetryBuffer(path, max_bytes=2000)
    for i in range(3):
        buf.append({"i": i})
    buf.close()
    data = path.read_bytes()
    assert data.count(b'[2,{"i":1}]') == 1
    path.write_bytes(data.replace(b'[2,{"i":1}]', b'[2,{"i":1#]'))  # same length, not JSON
    again = TelemetryBuffer(path, max_bytes=2000)
    assert again.pending(10) == [(1, {"i": 0}), (3, {"i": 2})]
    assert len(again) == 2 and again.size_bytes == 2 * len('{"i":0}')
    again.ack(3)
    assert len(again) == 0 and again.size_bytes == 0 and again.pending(10) == []
    again.close()
