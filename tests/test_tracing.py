"""OpenTelemetry tracing (optional): one send is one trace, the gateway's span and the sender's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import httpx
import redis
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine

from harness.apns import BUNDLE_ID, SimulatorProcess
from harness.gateway import Keys, gateway_settings
from harness.sender import final_count
from noti import tracing
from noti.gateway.app import create_app
from noti.queue import QueuedNotification
from noti.sender.config import SenderConfig
from noti.sender.service import Sender
from noti.settings import Settings

TOKEN = "ab" * 32


def _sender_config(simulator: SimulatorProcess) -> SenderConfig:
    env = {key.removeprefix("NOTI_").lower(): value for key, value in simulator.sender_env().items()}
    return SenderConfig(**{"credential": "default/test", "sender_health_port": 0, **env})  # type: ignore[arg-type]


async def test_one_send_is_one_trace_from_the_gateway_through_the_sender(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str, keys: Keys,
    apns_simulator: SimulatorProcess,
) -> None:  # fmt: skip
    spans = InMemorySpanExporter()
    settings = gateway_settings(database_url, redis_url)
    gateway_tracing = tracing.setup(settings, tracing.GATEWAY, exporter=spans)
    sender_tracing = tracing.setup(settings, tracing.SENDER, exporter=spans)
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(settings, engine=clean_db, redis=client, tracing=gateway_tracing)
    sender = Sender(_sender_config(apns_simulator), engine=clean_db, tracing=sender_tracing)
    sending = asyncio.create_task(sender.run())
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway",
            headers={"Authorization": f"Bearer {keys.sender}"},
        ) as http:  # fmt: skip
            answer = await http.post(
                "/api/notifications/", json={"device_token": TOKEN, "app": BUNDLE_ID, "title": "Hi"}
            )
            assert answer.status_code == 202, answer.text
            for token in ("cd" * 32, "ef" * 32):  # a bulk send goes to registered devices
                registered = await http.post("/api/devices/", json={"device_token": token, "app": BUNDLE_ID})
                assert registered.status_code in (200, 201), registered.text
            bulk = await http.post(
                "/api/notifications/bulk/",
                json={"device_tokens": ["cd" * 32, "ef" * 32], "app": BUNDLE_ID, "title": "All"},
            )
            assert bulk.status_code == 202, bulk.text
            for _ in range(100):
                if await asyncio.to_thread(final_count, clean_db) == 3:
                    break
                await asyncio.sleep(0.1)
    finally:
        sender.stop()
        await asyncio.wait_for(sending, 30)
        await client.aclose()
    finished = spans.get_finished_spans()
    [gateway_span] = [span for span in finished if span.name == "noti.gateway.send"]
    [bulk_span] = [span for span in finished if span.name == "noti.gateway.send_bulk"]
    delivered = {
        span.attributes["noti.notification.id"]: span for span in finished if span.name == "noti.sender.deliver"
    }
    sender_span = delivered[answer.json()["id"]]
    # A bulk send is one trace too: its span is the parent of each of its deliveries.
    bulk_ids = [item["id"] for item in bulk.json()["notifications"]]
    assert len(bulk_ids) == 2
    for id in bulk_ids:
        assert delivered[id].parent is not None and delivered[id].parent.span_id == bulk_span.context.span_id
        assert delivered[id].context.trace_id == bulk_span.context.trace_id != gateway_span.context.trace_id
    assert gateway_span.context.trace_id == sender_span.context.trace_id
    assert sender_span.parent is not None and sender_span.parent.span_id == gateway_span.context.span_id
    assert (gateway_span.resource.attributes["service.name"], sender_span.resource.attributes["service.name"]) == (
        "noti-gateway", "noti-sender",
    )  # fmt: skip
    assert (gateway_span.kind, sender_span.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    notification = answer.json()["id"]
    assert gateway_span.attributes["noti.notification.id"] == sender_span.attributes["noti.notification.id"]
    assert sender_span.attributes["noti.notification.id"] == notification
    assert sender_span.attributes["apns.status_code"] == 200


def test_the_trace_context_is_an_optional_field_of_the_message() -> None:
    traced = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    message = QueuedNotification(uuid.uuid4(), TOKEN, "com.example.app", {"body": "hi"}, trace=traced)
    assert QueuedNotification.decode(message.encode()).trace == traced
    plain = QueuedNotification(message.id, TOKEN, "com.example.app", {"body": "hi"})
    assert b"trace" not in plain.encode()["n"]
    assert QueuedNotification.decode(plain.encode()).trace is None


def test_tracing_is_off_by_default_and_costs_no_opentelemetry_import() -> None:
    # A fresh interpreter, so what other tests imported does not count.
    probe = (
        "import sys; from noti import tracing; from noti.settings import Settings;"
        "t = tracing.setup(Settings().gateway, tracing.GATEWAY); "
        "span = t.span('x').__enter__(); span.set('a', 1); assert span.carrier() == {};"
        "assert not t.enabled; assert 'opentelemetry.sdk' not in sys.modules, 'SDK imported'"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_tracing_without_opentelemetry_installed_is_a_one_line_error_saying_what_to_install() -> None:
    # The SDK made unimportable, as in an install without the tracing extra.
    probe = (
        "import sys; sys.modules['opentelemetry.sdk'] = None;"
        "from noti import tracing; from noti.settings import Settings\n"
        "try:\n    tracing.setup(Settings(tracing_enabled=True).sender, tracing.SENDER)\n"
        "except tracing.TracingUnavailable as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NOTI_TRACING_ENABLED needs OpenTelemetry: pip install 'noti[tracing]'"
    assert isinstance(Settings().tracing_enabled, bool) and not Settings().tracing_enabled
