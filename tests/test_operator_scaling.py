"""Sender replicas from the backlog's drain time: up at once, down only after the stabilization window."""

from __future__ import annotations

from noti.operator.scaling import Scaler, Throughput, recommended


def measured(**rates: float) -> Throughput:
    """A throughput model with total rates measured at replica counts (``r2=1500`` for 2 senders)."""
    model = Throughput(default_per_sender=1000)
    for replicas, rate in rates.items():
        model.record(int(replicas[1:]), rate)
    return model


def test_a_backlog_gets_the_senders_that_drain_it_within_the_target() -> None:
    unmeasured = Throughput(default_per_sender=1000)
    assert recommended(0, unmeasured, 60, 0, 20) == 0
    assert recommended(0, unmeasured, 60, 2, 20) == 2
    assert recommended(1, unmeasured, 60, 0, 20) == 1  # one queued notification wakes a sender
    assert recommended(60_000, unmeasured, 60, 1, 20) == 1  # one sender drains it in a minute
    assert recommended(180_001, unmeasured, 60, 1, 20) == 4
    assert recommended(10_000_000, unmeasured, 60, 1, 20) == 20  # the maximum holds


def test_the_measured_rate_replaces_the_assumed_one() -> None:
    slow = measured(r1=250)  # one sender did 250/s, not the 1000 assumed
    assert slow.per_sender() == 250
    assert recommended(60_000, slow, 60, 1, 20) == 4


def test_no_more_senders_than_the_credentials_rate_limit_keeps_busy() -> None:
    unmeasured = Throughput(default_per_sender=1000)
    assert recommended(10_000_000, unmeasured, 60, 1, 20, rate_limit=2500) == 3
    assert recommended(10_000_000, unmeasured, 60, 1, 20, rate_limit=100) == 1
    assert recommended(10_000_000, unmeasured, 60, 2, 20, rate_limit=100) == 2  # the minimum still holds


def test_senders_that_stopped_adding_throughput_are_not_added() -> None:
    # On two cores: 1 sender 1,600/s, 2 senders 2,300/s, 4 senders 2,400/s: past 2 a sender adds nothing.
    shared_cpu = measured(r1=1600, r2=2300, r4=2400)
    assert shared_cpu.saturation() == 2
    assert recommended(1_000_000, shared_cpu, 60, 1, 20) == 2
    scaling_well = measured(r1=1000, r2=1900, r4=3800)
    assert scaling_well.saturation() is None
    assert recommended(1_000_000, scaling_well, 60, 1, 20) == 17


def test_rates_come_from_the_finished_count_while_there_is_a_backlog() -> None:
    now = [0.0]
    scaler = Scaler(window_seconds=60, default_per_sender=1000, clock=lambda: now[0])
    scaler.measure(finished=0, running=2, backlog=5000)
    now[0] = 10
    scaler.measure(finished=8000, running=2, backlog=5000)
    assert scaler.throughput.observed == {2: 800.0}
    now[0] = 20
    scaler.measure(finished=8000, running=2, backlog=0)  # idle senders say nothing of their speed
    now[0] = 30
    scaler.measure(finished=8500, running=0, backlog=100)  # nor do none
    assert scaler.throughput.observed == {2: 800.0}


def test_a_rate_is_measured_only_between_looks_with_the_same_senders_and_a_backlog_at_both() -> None:
    now = [0.0]
    scaler = Scaler(window_seconds=60, default_per_sender=1000, clock=lambda: now[0])
    scaler.measure(finished=0, running=1, backlog=0)
    now[0] = 5
    scaler.measure(finished=200, running=1, backlog=40_000)  # a campaign just began: the sender was idle till then
    now[0] = 10
    scaler.measure(finished=12_700, running=1, backlog=60_000)
    assert scaler.throughput.observed == {1: 2500.0}
    now[0] = 15
    scaler.measure(finished=14_000, running=4, backlog=70_000)  # three more were starting meanwhile
    assert scaler.throughput.observed == {1: 2500.0}
    now[0] = 20
    scaler.measure(finished=34_000, running=4, backlog=50_000)
    assert scaler.throughput.observed == {1: 2500.0, 4: 4000.0}


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window() -> None:
    now = [0.0]
    scaler = Scaler(window_seconds=60, default_per_sender=100, clock=lambda: now[0])
    assert scaler.decide(current=1, backlog=450, drain_seconds=1, minimum=1, maximum=10) == 5
    now[0] = 30
    assert scaler.decide(current=5, backlog=0, drain_seconds=1, minimum=1, maximum=10) == 5  # a lull: keep them
    now[0] = 50
    assert scaler.decide(current=5, backlog=150, drain_seconds=1, minimum=1, maximum=10) == 5
    now[0] = 100  # the 450 has left the window; 150 (2 senders) is the highest since
    assert scaler.decide(current=5, backlog=0, drain_seconds=1, minimum=1, maximum=10) == 2
    now[0] = 200
    assert scaler.decide(current=2, backlog=0, drain_seconds=1, minimum=1, maximum=10) == 1


def test_a_restarted_operator_does_not_scale_down_at_once_and_honours_a_lowered_maximum() -> None:
    now = [0.0]
    scaler = Scaler(window_seconds=60, default_per_sender=100, clock=lambda: now[0])
    assert scaler.decide(current=6, backlog=0, drain_seconds=1, minimum=1, maximum=10) == 6
    now[0] = 61
    assert scaler.decide(current=6, backlog=0, drain_seconds=1, minimum=1, maximum=10) == 1
    lowered = Scaler(window_seconds=60, default_per_sender=100, clock=lambda: now[0])
    assert lowered.decide(current=6, backlog=10_000, drain_seconds=1, minimum=1, maximum=3) == 3
