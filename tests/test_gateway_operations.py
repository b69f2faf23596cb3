"""Open routes (health, readiness, metrics, docs), trailing slashes, and JSON errors."""

from __future__ import annotations

import uuid

import httpx
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy import Engine

from harness.gateway import APP, gateway_settings, stream_of
from noti.gateway.app import create_app

TOKEN = "cd" * 32


def open_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def test_health_readiness_and_metrics_need_no_key(gateway_app: FastAPI, client: httpx.AsyncClient) -> None:
    await client.post("/api/devices/", json={"device_token": TOKEN, "app": APP})
    await client.post("/api/notifications/", json={"device_token": TOKEN, "body": "x"})
    async with open_client(gateway_app) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok", "checks": {}}
        ready = await http.get("/readyz/")
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "redis": "ok"}
        metrics = (await http.get("/metrics")).text
    assert 'noti_gateway_requests_total{method="POST",route="/api/notifications/",status="202"} 1.0' in metrics
    assert 'noti_gateway_request_duration_seconds_count{method="POST",route="/api/devices/"}' in metrics
    assert f'noti_gateway_queue_depth{{stream="{stream_of(APP)}"}} 1.0' in metrics
    assert "noti_gateway_notifications_queued_total 1.0" in metrics


async def test_readiness_fails_with_503_when_redis_is_gone(clean_db: Engine, database_url: str) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    app = create_app(gateway_settings(database_url, "redis://127.0.0.1:1/0"), engine=clean_db, redis=dead)
    async with app.router.lifespan_context(app), open_client(app) as http:
        ready = await http.get("/readyz")
    await dead.aclose()
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["redis"].startswith("unreachable")


async def test_docs_and_schema_are_served_from_the_package(gateway_app: FastAPI) -> None:
    async with open_client(gateway_app) as http:
        swagger = await http.get("/api/docs/")
        redoc = await http.get("/api/redoc")
        schema = await http.get("/api/schema/")
        for page in (swagger, redoc):
            assert page.status_code == 200
            assert "cdn." not in page.text and "fonts.googleapis" not in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "/api/docs-assets/swagger-ui-bundle.js" in swagger.text
        assert "/api/docs-assets/redoc.standalone.js" in redoc.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            served = await http.get(f"/api/docs-assets/{asset}")
            assert served.status_code == 200 and len(served.content) > 10_000
    paths = schema.json()["paths"]
    assert {"/api/devices/", "/api/notifications/bulk/", "/api/notifications/stats/"} <= set(paths)
    assert schema.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_both_slash_forms_answer_every_method_without_a_redirect(client: httpx.AsyncClient) -> None:
    for path in ("/api/devices/", "/api/devices"):
        response = await client.post(path, json={"device_token": TOKEN, "app": APP})
        assert response.status_code in (200, 201), (path, response.status_code)
    for path in ("/api/notifications/", "/api/notifications"):
        response = await client.post(path, json={"device_token": TOKEN, "body": "x"})
        assert response.status_code == 202, path
    for path in ("/api/notifications/bulk", "/api/notifications/stats", f"/api/devices/{TOKEN}", "/healthz/"):
        method = "POST" if path.endswith("bulk") else "GET"
        body = {"device_tokens": [TOKEN], "body": "x"} if method == "POST" else None
        response = await client.request(method, path, json=body)
        assert response.status_code in (200, 202), path


async def test_errors_are_json_with_a_message(client: httpx.AsyncClient, clean_redis: redis.Redis) -> None:
    nowhere = await client.get("/api/nothing-here/")
    assert nowhere.status_code == 404 and nowhere.json() == {"detail": "no such route"}
    wrong_method = await client.put("/api/notifications/")
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()
    not_json = await client.post("/api/notifications/", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["detail"].startswith("invalid request")
    fields = await client.post("/api/notifications/", json={"device_token": "xyz", "priority": 7, "bogus": 1})
    assert fields.status_code == 422
    assert {e["field"] for e in fields.json()["errors"]} == {"body.device_token", "body.priority", "body.bogus"}


async def test_every_route_refuses_a_query_parameter_it_does_not_take(
    gateway_app: FastAPI, client: httpx.AsyncClient
) -> None:
    paths = gateway_app.openapi()["paths"]
    assert len(paths) >= 8
    for template, operations in paths.items():
        path = template.replace("{token}", TOKEN).replace("{id}", str(uuid.uuid4()))
        for method in operations:
            response = await client.request(method, path, params={"bogus": "1"})
            assert response.status_code == 422, (method, template, response.status_code)
            assert response.json()["errors"][0]["field"] == "query.bogus", (method, template)
            assert "422" in operations[method]["responses"], (method, template)
    for path in ("/api/schema/", "/api/docs", "/healthz/"):
        assert (await client.get(path, params={"bogus": "1"})).status_code == 422, path


async def test_a_500_says_it_closes_the_connection() -> None:
    from fastapi import FastAPI

    from noti.gateway import errors

    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        answer = await http.get("/boom")
    assert answer.status_code == 500 and answer.json() == {"detail": "internal error"}
    assert answer.headers["connection"] == "close"
