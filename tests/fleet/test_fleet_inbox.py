"""The hand-off between the MQTT network thread and the ingest thread."""

from __future__ import annotations

import threading
import time

from fleet_server.inbox import Inbox


def test_take_returns_items_in_order_up_to_the_batch_size_then_the_rest() -> None:
    inbox: Inbox[int] = Inbox(100)
    for i in range(7):
        assert inbox.put(i)
    assert inbox.take(timeout_s=1, gather_s=0, max_items=5) == [0, 1, 2, 3, 4]
    assert len(inbox) == 2
    assert inbox.take(timeout_s=1, gather_s=0, max_items=5) == [5, 6]
    assert len(inbox) == 0


def test_a_full_inbox_refuses_and_keeps_what_it_holds() -> None:
    inbox: Inbox[str] = Inbox(2)
    assert inbox.put("a") and inbox.put("b")
    assert not inbox.put("c")
    assert inbox.take(timeout_s=1, gather_s=0, max_items=10) == ["a", "b"]
    assert inbox.put("d")


def test_take_times_out_empty_when_nothing_comes() -> None:
    inbox: Inbox[int] = Inbox(10)
    assert inbox.take(timeout_s=0.05, gather_s=0.05, max_items=10) == []


def test_a_burst_put_from_another_thread_is_taken_in_one_batch() -> None:
    inbox: Inbox[int] = Inbox(10_000)
    started = threading.Event()

    def burst() -> None:
        started.wait()
        for i in range(1000):
            inbox.put(i)

    t = threading.Thread(target=burst)
    t.start()
    started.set()
    # the gather window is far longer than a 1,000-item burst takes, and ends early once full
    batch = inbox.take(timeout_s=10, gather_s=10, max_items=1000)
    t.join()
    assert batch == list(range(1000))


def test_a_put_after_a_take_wakes_the_next_take() -> None:
    inbox: Inbox[str] = Inbox(10)
    inbox.put("first")
    assert inbox.take(timeout_s=1, gather_s=0, max_items=10) == ["first"]
    timer = threading.Timer(0.1, inbox.put, ("second",))
    timer.start()
    start = time.monotonic()
    assert inbox.take(timeout_s=10, gather_s=0, max_items=10) == ["second"]
    assert time.monotonic() - start < 5  # woken by the put, not by the timeout
    timer.join()
