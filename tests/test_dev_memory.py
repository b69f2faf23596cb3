"""When a dev stack gives a burst's memory back: once it went quiet after enough work, never while idle."""

from __future__ import annotations

from noti.dev.memory import CHECK_SECONDS, release_due, release_memory


def test_memory_is_given_back_once_the_stack_goes_quiet_after_a_burst() -> None:
    assert not release_due(work_since_release=30.0, last_interval_work=4.0, interval=CHECK_SECONDS)  # still busy
    assert release_due(work_since_release=30.0, last_interval_work=0.01, interval=CHECK_SECONDS)


def test_an_idle_stack_or_a_single_send_costs_no_release() -> None:
    assert not release_due(work_since_release=0.03, last_interval_work=0.03, interval=CHECK_SECONDS)
    assert not release_due(work_since_release=0.2, last_interval_work=0.0, interval=CHECK_SECONDS)


def test_a_release_runs_every_compactor() -> None:
    ran: list[str] = []
    release_memory([lambda: ran.append("redis"), lambda: ran.append("sqlite")])
    assert ran == ["redis", "sqlite"]
