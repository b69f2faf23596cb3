"""The sender's probe and metrics endpoints answer what kubelet and Prometheus expect."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from noti.sender.health import HealthServer


async def _serve(status: dict[str, object]) -> tuple[HealthServer, str]:
    registry = CollectorRegistry()
    Counter("noti_test_notifications", "a counter", registry=registry).inc(3)
    server = HealthServer(registry, lambda: status)
    port = await server.start("127.0.0.1", 0)
    return server, f"http://127.0.0.1:{port}"


async def test_probes_answer_the_status_with_200_or_503() -> None:
    server, url = await _serve({"live": True, "ready": False, "credential_failure": "InvalidProviderToken"})
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            live, ready, slash = await http.get("/healthz"), await http.get("/readyz"), await http.get("/readyz/")
    finally:
        await server.stop()
    assert (live.status_code, ready.status_code, slash.status_code) == (200, 503, 503)
    assert ready.headers["content-type"].startswith("application/json")
    assert ready.json() == {"live": True, "ready": False, "credential_failure": "InvalidProviderToken"}


async def test_metrics_are_prometheus_text() -> None:
    server, url = await _serve({"live": True, "ready": True})
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = await http.get("/metrics")
    finally:
        await server.stop()
    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "noti_test_notifications_total 3.0" in metrics.text


async def test_an_unknown_path_is_a_json_404() -> None:
    server, url = await _serve({"live": True, "ready": True})
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            missing, wrong_method = await http.get("/nope"), await http.post("/healthz")
    finally:
        await server.stop()
    assert (missing.status_code, missing.json()) == (404, {"error": "not found"})
    assert wrong_method.status_code == 404


async def test_a_server_never_started_stops_quietly() -> None:
    await HealthServer(CollectorRegistry(), dict).stop()


async def test_a_request_that_is_not_http_gets_400_and_the_server_keeps_answering() -> None:
    server, url = await _serve({"live": True, "ready": True})
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.write(b"\x16\x03\x01 not an HTTP request\r\n\r\n")
        first_line = await reader.readline()
        writer.close()
        async with httpx.AsyncClient(base_url=url) as http:
            after = await http.get("/healthz")
    finally:
        await server.stop()
    assert first_line.startswith(b"HTTP/1.1 400")
    assert after.status_code == 200
