"""The fair campaign order the reader serves campaigns in (the read itself is tested in test_sender_delivery)."""

from __future__ import annotations

from noti.sender.reader import fair_order


def test_campaigns_take_turns() -> None:
    assert [fair_order(["a", "b", "c"], turn)[0] for turn in range(4)] == ["a", "b", "c", "a"]


def test_every_campaign_is_served_each_turn() -> None:
    assert all(sorted(fair_order(["a", "b", "c"], turn)) == ["a", "b", "c"] for turn in range(6))


def test_no_campaigns_no_order() -> None:
    assert fair_order([], 7) == []
