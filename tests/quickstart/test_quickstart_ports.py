"""The quickstart's ports for its services stay out of the kernel's range for outgoing
connections, so a client connection cannot take one before its service binds it."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
from edgeserve.quickstart.services import free_port


def test_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(10000 <= p < low for p in ports)
    assert len(ports) > 1  # random, not one fixed port that two services would share
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            spare = probe.getsockname()[1]
        # the random draw offers the taken port first
        monkeypatch.setattr(random, "sample", lambda population, k: [taken, spare])
        assert free_port() == spare
