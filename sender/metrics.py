"""Prometheus metrics of a sender (every name in one place)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SenderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.notifications = Counter(
            "noti_sender_notifications_total",
            "Notifications finished or retried, by result and APNs reason.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "noti_sender_apns_latency_seconds",
            "Time from request to APNs' answer.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        # From when the notification was queued (its first stream entry) to APNs' answer that it was
        # sent, retries included: what a user waits. Campaign traffic is paced on purpose, hence the label.
        self.enqueue_to_sent = Histogram(
            "noti_sender_enqueue_to_sent_seconds",
            "Time from a notification's queuing to APNs accepting it, by traffic (transactional or campaign).",
            ["traffic"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.in_flight = Gauge("noti_sender_in_flight", "Notifications being sent now.", registry=self.registry)
        self.backlog = Gauge("noti_sender_backlog", "Entries waiting in a stream.", ["stream"], registry=self.registry)
        self.retries_waiting = Gauge(
            "noti_sender_retries_waiting", "Notifications waiting in the delayed-retry set.", registry=self.registry
        )
        self.batches = Counter(
            "noti_sender_record_batches_total", "Outcome batches written to the store.", registry=self.registry
        )
