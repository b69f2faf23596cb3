"""``noti campaign run``'s progress: rate and ETA from samples, the plain line, manifests read as kubectl reads them."""

from __future__ import annotations

from pathlib import Path

from noti.campaigns import CampaignSpec
from noti.commands.campaign import Snapshot, Throughput, _load, progress_line, rate_and_eta
from noti.queue import CampaignProgress


def _progress(sent: int, failed: int = 0, invalid: int = 0, queued: int = 1000) -> CampaignProgress:
    return CampaignProgress(
        total=1000, queued=queued, by_status={"sent": sent, "failed": failed, "invalid_token": invalid}
    )


def test_rate_and_eta_come_from_the_samples() -> None:
    assert rate_and_eta([(0.0, 0)], 1000) == (None, None)
    assert rate_and_eta([(0.0, 0), (2.0, 400)], 1000) == (200.0, 3.0)
    assert rate_and_eta([(0.0, 10), (2.0, 10)], 1000) == (0.0, None)  # stalled: no ETA rather than a wrong one
    assert rate_and_eta([(0.0, 900), (1.0, 1000)], 1000) == (100.0, 0.0)


def test_the_rate_follows_the_last_seconds_not_the_whole_run() -> None:
    throughput = Throughput(window=5.0)
    for second in range(10):  # 100/s for 10 s...
        throughput.snapshot(_progress(sent=100 * second), 3000, float(second))
    for second in range(10, 16):  # ...then 500/s
        snapshot = throughput.snapshot(_progress(sent=900 + 500 * (second - 9)), 6000, float(second))
    assert snapshot.rate == 500.0
    assert snapshot.sent == 3900 and snapshot.eta == (6000 - 3900) / 500


def test_failed_counts_invalid_tokens_too_and_the_line_says_it_all() -> None:
    snapshot = Throughput().snapshot(_progress(sent=590, failed=7, invalid=3, queued=2000), 5000, 0.0)
    assert (snapshot.sent, snapshot.failed, snapshot.finished) == (590, 10, 600)
    line = progress_line("default/winter-sale", Snapshot(5000, 2000, 590, 10, 480.4, 9.2))
    assert line == "default/winter-sale: 600/5000 finished (sent 590, failed 10), queued 2000, 480/s, ETA 9s"
    assert progress_line("x", Snapshot(100, 0, 0, 0, None, 125.0)).endswith("?/s, ETA 2m05s")


def test_a_start_time_in_yaml_is_read_as_the_string_the_crd_declares(tmp_path: Path) -> None:
    manifest = tmp_path / "campaign.yaml"
    manifest.write_text(
        "apiVersion: noti.dev/v1alpha1\nkind: NotificationCampaign\nmetadata: {name: later}\n"
        "spec:\n  credentialRef: {name: dev}\n  notification: {title: Hi}\n  audience: {allDevices: true}\n"
        "  startAt: 2026-12-24T18:00:00Z\n"
    )
    loaded = _load(manifest)
    assert loaded["spec"]["startAt"] == "2026-12-24T18:00:00Z"  # type: ignore[index]
    spec = CampaignSpec.from_manifest(loaded)
    assert spec.start_at is not None and spec.start_at.isoformat() == "2026-12-24T18:00:00+00:00"
