"""Sender replicas from backlog: up at once, down only after the stabilization window."""

from __future__ import annotations

from noti.operator.scaling import Scaler, recommended


def test_recommendation_covers_the_backlog_within_bounds() -> None:
    assert recommended(0, 100, 0, 5) == 0
    assert recommended(1, 100, 0, 5) == 1  # one queued notification wakes a sender
    assert recommended(250, 100, 1, 5) == 3
    assert recommended(10_000, 100, 1, 5) == 5
    assert recommended(0, 100, 2, 5) == 2


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window() -> None:
    now = [0.0]
    scaler = Scaler(window_seconds=60, clock=lambda: now[0])
    assert scaler.decide(current=1, backlog=450, per_sender=100, minimum=1, maximum=10) == 5
    now[0] = 30
    assert scaler.decide(current=5, backlog=0, per_sender=100, minimum=1, maximum=10) == 5  # a lull: keep them
    now[0] = 50
    assert scaler.decide(current=5, backlog=150, per_sender=100, minimum=1, maximum=10) == 5
    now[0] = 100  # the 450 has left the window; 150 (2 senders) is the highest since
    assert scaler.decide(current=5, backlog=0, per_sender=100, minimum=1, maximum=10) == 2
    now[0] = 200
    assert scaler.decide(current=2, backlog=0, per_sender=100, minimum=1, maximum=10) == 1


def test_a_restarted_operator_does_not_scale_down_at_once_and_honours_a_lowered_maximum() -> None:
    now = [0.0]
    scaler = Scaler(window_seconds=60, clock=lambda: now[0])
    assert scaler.decide(current=6, backlog=0, per_sender=100, minimum=1, maximum=10) == 6
    now[0] = 61
    assert scaler.decide(current=6, backlog=0, per_sender=100, minimum=1, maximum=10) == 1
    assert Scaler(60).decide(current=8, backlog=5000, per_sender=100, minimum=1, maximum=3) == 3
