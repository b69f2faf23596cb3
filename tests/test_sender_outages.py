"""keep_trying: what the sender does while Redis or the database is away."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from noti.sender import outages


class Flaky:
    """A step that fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


@pytest.fixture(autouse=True)
def quick_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outages, "FIRST_PAUSE", 0.001)


async def test_a_failing_step_is_repeated_until_it_works(caplog: pytest.LogCaptureFixture) -> None:
    step = Flaky(3, ConnectionError("away"))
    assert await outages.keep_trying(step, (ConnectionError,), "writing 3 outcomes") == "done"
    assert step.calls == 4
    assert caplog.records[0].getMessage().startswith("writing 3 outcomes failed, retrying in")


async def test_an_error_it_was_not_told_to_ride_out_is_raised_at_once() -> None:
    step = Flaky(1, ValueError("a bug, not an outage"))
    with pytest.raises(ValueError, match="a bug"):
        await outages.keep_trying(step, (ConnectionError,), "acknowledging")
    assert step.calls == 1


async def test_pauses_double_up_to_the_longest(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(outages, "FIRST_PAUSE", 1.0)
    monkeypatch.setattr(outages, "asyncio", SimpleNamespace(sleep=sleep))  # this module's sleep only
    await outages.keep_trying(Flaky(5, ConnectionError()), (ConnectionError,), "scheduling a retry")
    assert pauses == [1.0, 2.0, 4.0, 5.0, 5.0]
