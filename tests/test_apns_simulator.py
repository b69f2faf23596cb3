"""The APNs simulator answers like Apple over TLS HTTP/2, takes faults at runtime and scales over workers."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from harness.apns import OTHER_BUNDLE_ID, SimulatorProcess
from noti.apns import simulator as apns_simulator_module
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.payload import NotificationContent
from noti.apns.tokens import ProviderTokens, load_signing_key, mint
from noti.apns.transport import H2ClientConnection

DEVICE = "ab" * 32
ALERT = b'{"aps":{"alert":{"title":"Hi"}}}'


@pytest.fixture
async def http(apns_simulator: SimulatorProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A stock httpx HTTP/2 client trusting the simulator's CA: raw requests, nothing of ours in between."""
    async with httpx.AsyncClient(
        base_url=apns_simulator.url, http2=True, verify=ssl.create_default_context(cafile=apns_simulator.ca_path)
    ) as client:
        yield client


def _headers(simulator: SimulatorProcess, **changes: str | None) -> dict[str, str]:
    key = load_signing_key(simulator.private_key_pem)
    headers: dict[str, str | None] = {
        "authorization": f"bearer {mint(key, simulator.key_id, simulator.team_id, int(time.time()))}",
        "apns-topic": simulator.bundle_id,
        "apns-push-type": "alert",
        **{name.replace("_", "-"): value for name, value in changes.items()},
    }
    return {name: value for name, value in headers.items() if value is not None}


def _impostor_token(simulator: SimulatorProcess) -> str:
    return "bearer " + mint(
        ec.generate_private_key(ec.SECP256R1()), simulator.key_id, simulator.team_id, int(time.time())
    )


def _expired_token(simulator: SimulatorProcess) -> str:
    key = load_signing_key(simulator.private_key_pem)
    return "bearer " + mint(key, simulator.key_id, simulator.team_id, int(time.time()) - 3700)


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("no-authorization", 403, "MissingProviderToken"),
        ("expired-token", 403, "ExpiredProviderToken"),
        ("unregistered-key", 403, "InvalidProviderToken"),
        ("other-bundle", 400, "TopicDisallowed"),
        ("background-priority-10", 400, "BadPriority"),
        ("widgets-without-its-suffix", 400, "TopicDisallowed"),
        ("bad-push-type", 400, "InvalidPushType"),
        ("priority-7", 400, "BadPriority"),
        ("collapse-id-65-bytes", 400, "BadCollapseId"),
        ("bad-apns-id", 400, "BadMessageId"),
        ("non-hex-device-token", 400, "BadDeviceToken"),
        ("empty-body", 400, "PayloadEmpty"),
        ("alert-5000-bytes", 413, "PayloadTooLarge"),
    ],
)
async def test_requests_apple_refuses_get_apples_reason(
    http: httpx.AsyncClient, apns_simulator: SimulatorProcess, case: str, status: int, reason: str
) -> None:
    device, body = DEVICE, ALERT
    headers = {
        "no-authorization": lambda: _headers(apns_simulator, authorization=None),
        "expired-token": lambda: _headers(apns_simulator, authorization=_expired_token(apns_simulator)),
        "unregistered-key": lambda: _headers(apns_simulator, authorization=_impostor_token(apns_simulator)),
        "other-bundle": lambda: _headers(apns_simulator, apns_topic="com.other.app"),
        "background-priority-10": lambda: _headers(apns_simulator, apns_push_type="background", apns_priority="10"),
        "widgets-without-its-suffix": lambda: _headers(apns_simulator, apns_push_type="widgets"),
        "bad-push-type": lambda: _headers(apns_simulator, apns_push_type="banner"),
        "priority-7": lambda: _headers(apns_simulator, apns_priority="7"),
        "collapse-id-65-bytes": lambda: _headers(apns_simulator, apns_collapse_id="c" * 65),
        "bad-apns-id": lambda: _headers(apns_simulator, apns_id="not-a-uuid"),
    }.get(case, lambda: _headers(apns_simulator))()
    if case == "non-hex-device-token":
        device = "zz" * 32
    elif case == "empty-body":
        body = b""
    elif case == "alert-5000-bytes":
        body = json.dumps({"aps": {"alert": {"body": "x" * 4970}}}).encode()
        assert len(body) >= 5000
    response = await http.post(f"/3/device/{device}", content=body, headers=headers)
    assert (response.status_code, response.json()["reason"]) == (status, reason)
    assert response.http_version == "HTTP/2"
    assert apns_simulator.counters()["by_outcome"] == {reason: 1}


async def test_a_provider_token_signed_in_der_is_accepted_as_apple_does(
    http: httpx.AsyncClient, apns_simulator: SimulatorProcess
) -> None:
    raw = _headers(apns_simulator)["authorization"].removeprefix("bearer ")
    head, claims, signature = raw.split(".")
    r_s = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    der = encode_dss_signature(int.from_bytes(r_s[:32], "big"), int.from_bytes(r_s[32:], "big"))
    token = f"{head}.{claims}.{base64.urlsafe_b64encode(der).rstrip(b'=').decode()}"
    response = await http.post(
        f"/3/device/{DEVICE}", content=ALERT, headers=_headers(apns_simulator, authorization=f"bearer {token}")
    )
    assert response.status_code == 200


async def test_with_a_device_registry_tokens_belong_to_their_topics(
    http: httpx.AsyncClient, apns_simulator: SimulatorProcess
) -> None:
    voip_token = "cd" * 32
    apns_simulator.register_devices(
        {DEVICE: [apns_simulator.bundle_id], voip_token: [f"{apns_simulator.bundle_id}.voip"]}
    )

    async def send(device: str, **changes: str) -> tuple[int, str | None]:
        response = await http.post(f"/3/device/{device}", content=ALERT, headers=_headers(apns_simulator, **changes))
        return response.status_code, response.json()["reason"] if response.content else None

    assert await send(DEVICE) == (200, None)
    assert await send("ef" * 32) == (400, "BadDeviceToken")  # well-formed, but never issued
    assert await send(voip_token) == (400, "DeviceTokenNotForTopic")
    assert await send(voip_token, apns_push_type="voip", apns_topic=f"{apns_simulator.bundle_id}.voip") == (
        200,
        None,
    )
    apns_simulator.clear_devices()
    assert await send("ef" * 32) == (200, None)


async def test_a_sender_with_another_apps_bundle_id_meets_device_token_not_for_topic(
    apns_simulator: SimulatorProcess,
) -> None:
    apns_simulator.register_devices({DEVICE: [apns_simulator.bundle_id]})
    client = APNsClient(
        OTHER_BUNDLE_ID,  # an app of the same team, so the topic itself is allowed
        endpoint=apns_simulator.url,
        tokens=ProviderTokens(load_signing_key(apns_simulator.private_key_pem), apns_simulator.key_id,
                              apns_simulator.team_id),
        ssl_context=client_ssl_context(ca_file=apns_simulator.ca_path),
    )  # fmt: skip
    try:
        wrong = await client.send(DEVICE, NotificationContent(title="x"))
    finally:
        await client.aclose()
    assert (wrong.status_code, wrong.reason) == (400, "DeviceTokenNotForTopic")


async def test_provider_token_churn_is_throttled_when_asked(
    http: httpx.AsyncClient, apns_simulator: SimulatorProcess
) -> None:
    apns_simulator.set_faults(token_update_min_seconds=1200.0)
    key = load_signing_key(apns_simulator.private_key_pem)
    first, second = (
        f"bearer {mint(key, apns_simulator.key_id, apns_simulator.team_id, int(time.time()) - age)}" for age in (60, 30)
    )

    async def send(authorization: str) -> tuple[int, str | None]:
        headers = _headers(apns_simulator, authorization=authorization)
        response = await http.post(f"/3/device/{DEVICE}", content=ALERT, headers=headers)
        return response.status_code, response.json()["reason"] if response.content else None

    assert await send(first) == (200, None)
    assert await send(second) == (429, "TooManyProviderTokenUpdates")  # a new token a minute after the last
    assert await send(first) == (200, None)  # the team's token still works


async def test_the_control_plane_answers_json_errors(apns_simulator: SimulatorProcess) -> None:
    async with httpx.AsyncClient(base_url=apns_simulator.control_url) as control:
        missing = await control.get("/nothing")
        wrong_method = await control.get("/faults")
        not_json = await control.post("/faults", content=b"{")
        bad_devices = await control.post("/devices", json={"devices": {DEVICE: "com.example.app"}})
        slash = await control.get("/counters/")
    assert (missing.status_code, missing.json()) == (404, {"error": "no such control route: GET /nothing"})
    assert wrong_method.status_code == 404
    assert not_json.status_code == 400 and "error" in not_json.json()
    assert bad_devices.status_code == 400 and DEVICE in bad_devices.json()["error"]
    assert slash.status_code == 200 and slash.json()["total"] == 0


async def test_sandbox_successes_carry_an_apns_unique_id(
    http: httpx.AsyncClient, apns_simulator: SimulatorProcess
) -> None:
    response = await http.post(f"/3/device/{DEVICE}", content=ALERT, headers=_headers(apns_simulator))
    assert uuid.UUID(response.headers["apns-unique-id"]) != uuid.UUID(response.headers["apns-id"])


async def test_a_5000_byte_voip_notification_is_accepted(
    http: httpx.AsyncClient, apns_simulator: SimulatorProcess
) -> None:
    body = json.dumps({"aps": {}, "call": "x" * 4980}).encode()
    assert len(body) >= 5000
    headers = _headers(apns_simulator, apns_push_type="voip", apns_topic=f"{apns_simulator.bundle_id}.voip")
    response = await http.post(f"/3/device/{DEVICE}", content=body, headers=headers)
    assert response.status_code == 200


async def test_success_echoes_the_apns_id_sent(http: httpx.AsyncClient, apns_simulator: SimulatorProcess) -> None:
    apns_id = str(uuid.uuid4())
    response = await http.post(f"/3/device/{DEVICE}", content=ALERT, headers=_headers(apns_simulator, apns_id=apns_id))
    assert (response.status_code, response.headers["apns-id"]) == (200, apns_id)
    assert response.content == b""
    unnamed = await http.post(f"/3/device/{DEVICE}", content=ALERT, headers=_headers(apns_simulator))
    assert uuid.UUID(unnamed.headers["apns-id"])  # APNs names the notification when we did not


async def test_an_unregistered_device_answer_carries_when_it_stopped(
    http: httpx.AsyncClient, apns_simulator: SimulatorProcess
) -> None:
    apns_simulator.set_faults(unregistered=[DEVICE])
    before = time.time() * 1000
    response = await http.post(f"/3/device/{DEVICE}", content=ALERT, headers=_headers(apns_simulator))
    answer = response.json()
    assert (response.status_code, answer["reason"]) == (410, "Unregistered")
    assert before - 1000 <= answer["timestamp"] <= time.time() * 1000 + 1000


async def test_faults_change_at_runtime(http: httpx.AsyncClient, apns_simulator: SimulatorProcess) -> None:
    async def send() -> tuple[int, float]:
        started = time.perf_counter()
        response = await http.post(f"/3/device/{DEVICE}", content=ALERT, headers=_headers(apns_simulator))
        return response.status_code, time.perf_counter() - started

    apns_simulator.set_faults(rate_503=1.0)
    answers = await asyncio.gather(*(send() for _ in range(20)))
    assert {status for status, _ in answers} == {503}
    assert apns_simulator.counters()["by_outcome"] == {"ServiceUnavailable": 20}

    apns_simulator.set_faults(rate_503=0.0)
    status, quick = await send()
    assert status == 200
    apns_simulator.set_faults(latency_ms=300.0)
    status, slow = await send()
    assert status == 200
    assert slow >= 0.3 > quick

    async with httpx.AsyncClient() as control:
        refused = await control.post(f"{apns_simulator.control_url}/faults", json={"no_such_fault": 1})
    assert refused.status_code == 400 and "no_such_fault" in refused.json()["error"]


async def test_the_server_allows_1000_concurrent_streams(apns_simulator: SimulatorProcess) -> None:
    host, port = apns_simulator.url.removeprefix("https://").rsplit(":", 1)
    _, connection = await asyncio.get_running_loop().create_connection(
        lambda: H2ClientConnection(f"{host}:{port}"),
        host,
        int(port),
        ssl=client_ssl_context(ca_file=apns_simulator.ca_path),
    )
    await connection.settled(5)
    assert connection.max_streams == 1000
    connection.close()


async def test_two_workers_share_one_port_and_merge_their_counters(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    simulator = await apns_simulator_module.start(port=0, control_port=0, workers=2, channels_port=None)
    try:
        await simulator.register_key("TEAM", "KID", ["com.example.app"], public_pem.decode())
        clients = [
            APNsClient(
                "com.example.app",
                endpoint=simulator.url,
                tokens=ProviderTokens(key, "KID", "TEAM"),
                ssl_context=client_ssl_context(ca_file=simulator.ca_path),
                connections=1,
            )
            for _ in range(16)  # the kernel spreads connections, not requests, over the workers
        ]
        results = await asyncio.gather(
            *(clients[i % 16].send(f"{i:064x}", NotificationContent(title="x")) for i in range(400))
        )
        for client in clients:
            await client.aclose()
        assert all(result.ok for result in results)
        counters = await simulator.counters()
        assert counters["total"] == 400
        assert counters["by_outcome"] == {"Success": 400}
        assert len(counters["by_token"]) == 400
        per_worker = await asyncio.gather(*(_worker_total(simulator, index) for index in range(2)))
        assert sum(per_worker) == 400 and min(per_worker) > 0, per_worker
    finally:
        await simulator.stop()


async def _worker_total(simulator: apns_simulator_module.Simulator, index: int) -> int:
    """One worker's own count, asked over its command pipe."""
    _, conn = simulator._workers[index]
    loop = asyncio.get_running_loop()

    def ask() -> Any:
        conn.send(("counters", None))
        return conn.recv()

    answer: dict[str, Any] = await loop.run_in_executor(None, ask)
    return int(answer["total"])


def test_the_cli_starts_and_prints_where_it_listens(tmp_path: Path) -> None:
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    process = subprocess.Popen(
        [
            sys.executable, "-m", "noti.apns.simulator", "--port", "0", "--control-port", "0",
            "--register", f"TEAM:KID:com.example.app:{key_file}",
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert info["url"].startswith("https://127.0.0.1:")
        assert Path(info["ca"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        control = f"http://127.0.0.1:{info['control_port']}"
        assert httpx.get(f"{control}/counters", timeout=10).json()["total"] == 0
        client = APNsClient(
            "com.example.app",
            endpoint=info["url"],
            tokens=ProviderTokens(load_signing_key(key_file.read_bytes()), "KID", "TEAM"),
            ssl_context=client_ssl_context(ca_file=info["ca"]),
        )

        async def send() -> bool:
            result = await client.send(DEVICE, NotificationContent(title="x"))
            await client.aclose()
            return result.ok

        assert asyncio.run(send())
        assert httpx.get(f"{control}/counters", timeout=10).json()["by_outcome"] == {"Success": 1}
    finally:
        process.terminate()
        process.wait(10)


def test_the_cli_refuses_a_key_that_is_not_p256_in_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_text("not a key\n")
    result = subprocess.run(
        [sys.executable, "-m", "noti.apns.simulator", "--port", "0", "--register", f"T:K:com.example.app:{key_file}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"Invalid value for --register: {key_file}" in result.stderr


async def test_a_long_running_simulator_counts_the_latest_tokens_and_forgets_the_earliest() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    simulator = await apns_simulator_module.start(port=0, control_port=0, max_counted_tokens=10)
    try:
        await simulator.register_key("TEAM", "KID", ["com.example.app"], public_pem.decode())
        client = APNsClient(
            "com.example.app", endpoint=simulator.url, tokens=ProviderTokens(key, "KID", "TEAM"),
            ssl_context=client_ssl_context(ca_file=simulator.ca_path), connections=1,
        )  # fmt: skip
        tokens = [f"{i:064x}" for i in range(25)]
        for token in tokens:  # one at a time: the order they were first counted in is the order sent
            assert (await client.send(token, NotificationContent(title="x"))).ok
        await client.aclose()
        counters = await simulator.counters()
        assert counters["total"] == 25 and counters["by_outcome"] == {"Success": 25}
        assert len(counters["by_token"]) <= 10
        assert list(counters["by_token"]) == tokens[-len(counters["by_token"]) :]  # the latest, each counted once
        assert set(counters["by_token"].values()) == {1}
        assert counters["tokens_forgotten"] == 25 - len(counters["by_token"])
    finally:
        await simulator.stop()
