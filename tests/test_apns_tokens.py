"""Provider tokens: one per credential across processes, replaced once, against real Redis and the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness.apns import SimulatorProcess
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.payload import NotificationContent
from noti.apns.tokens import REFRESH_AFTER, CredentialKeyError, ProviderTokens, load_signing_key, mint
from noti.settings import Settings

REDIS_KEY = "noti:provider-token:test"
NOW = 1_800_000_000.0

# One sender process: its own ProviderTokens on the shared Redis key, sending through the
# simulator once every process has started (so they race for the first token).
_SENDER = """
import asyncio, json, sys, time
import redis.asyncio as aioredis
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.payload import NotificationContent
from noti.apns.tokens import ProviderTokens, load_signing_key

url, ca, key_file, key_id, team_id, bundle, redis_url, redis_key, start_at = sys.argv[1:]

async def main() -> None:
    redis = aioredis.Redis.from_url(redis_url)
    tokens = ProviderTokens(load_signing_key(open(key_file, "rb").read()), key_id, team_id,
                            redis=redis, redis_key=redis_key)
    client = APNsClient(bundle, endpoint=url, tokens=tokens, ssl_context=client_ssl_context(ca_file=ca))
    await asyncio.sleep(max(0.0, float(start_at) - time.time()))
    results = await asyncio.gather(*(client.send(f"{i:064x}", NotificationContent(title="hi")) for i in range(50)))
    print(json.dumps({"ok": sum(r.ok for r in results), "minted": tokens.minted, "token": await tokens.current()}))
    await client.aclose()
    await redis.aclose()

asyncio.run(main())
"""


@pytest.fixture
async def redis(clean_redis: object, redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _instances(key: ec.EllipticCurvePrivateKey, redis: aioredis.Redis, count: int = 20) -> list[ProviderTokens]:
    return [
        ProviderTokens(key, "KID", "TEAM", redis=redis, redis_key=REDIS_KEY, clock=lambda: NOW) for _ in range(count)
    ]


async def _stored(redis: aioredis.Redis) -> str:
    raw = await redis.get(REDIS_KEY)
    assert isinstance(raw, bytes)
    return raw.decode()


def test_sender_processes_of_one_credential_mint_one_token(
    apns_simulator: SimulatorProcess, clean_redis: object, redis_url: str
) -> None:
    start_at = str(time.time() + 3.0)  # after every interpreter has imported; then they race
    command = [
        sys.executable, "-c", _SENDER, apns_simulator.url, str(apns_simulator.ca_path), str(apns_simulator.key_path),
        apns_simulator.key_id, apns_simulator.team_id, apns_simulator.bundle_id, redis_url,
        "noti:provider-token:processes", start_at,
    ]  # fmt: skip
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=dict(os.environ)) for _ in range(4)]
    reports = [json.loads(process.communicate(timeout=60)[0]) for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert [report["ok"] for report in reports] == [50] * 4
    assert sum(report["minted"] for report in reports) == 1
    assert len({report["token"] for report in reports}) == 1
    counters = apns_simulator.counters()
    assert counters["by_outcome"] == {"Success": 200}
    assert counters["provider_tokens"] == 1


async def _commands(redis: aioredis.Redis) -> dict[str, int]:
    """How many times Redis ran each command successfully since the last CONFIG RESETSTAT."""
    stats = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"]) - int(value.get("failed_calls", 0))
        for name, value in stats.items()
    }


@pytest.mark.parametrize("stored", [False, True], ids=["no-token-yet", "token-in-redis"])
async def test_many_first_sends_on_a_small_redis_pool_look_the_token_up_once(
    redis: aioredis.Redis, redis_url: str, key: ec.EllipticCurvePrivateKey, stored: bool
) -> None:
    if stored:
        await redis.set(REDIS_KEY, f"{int(NOW) - 60}:{mint(key, 'KID', 'TEAM', int(NOW) - 60)}")
    small = aioredis.Redis.from_url(redis_url, max_connections=2)  # a pool that 1,000 lookups at once would exhaust
    tokens = ProviderTokens(key, "KID", "TEAM", redis=small, redis_key=REDIS_KEY, clock=lambda: NOW)
    await redis.config_resetstat()
    try:
        answers = await asyncio.gather(*(tokens.current() for _ in range(1000)), return_exceptions=True)
    finally:
        await small.aclose()
    errors = [answer for answer in answers if isinstance(answer, BaseException)]
    assert errors == []
    assert len(set(answers)) == 1
    commands = await _commands(redis)
    stores = commands.get("evalsha", 0) + commands.get("eval", 0)  # the compare-and-set, which GETs once itself
    assert commands.get("get", 0) - stores == 1
    assert tokens.minted == stores == (0 if stored else 1)


async def test_a_thousand_first_sends_through_the_simulator_all_succeed_with_one_token(
    apns_simulator: SimulatorProcess, clean_redis: object, redis_url: str
) -> None:
    small = aioredis.Redis.from_url(redis_url, max_connections=2)
    tokens = ProviderTokens(
        load_signing_key(apns_simulator.private_key_pem), apns_simulator.key_id, apns_simulator.team_id,
        redis=small, redis_key=REDIS_KEY,
    )  # fmt: skip
    client = APNsClient(
        apns_simulator.bundle_id, endpoint=apns_simulator.url, tokens=tokens,
        ssl_context=client_ssl_context(ca_file=apns_simulator.ca_path),
    )  # fmt: skip
    try:
        results = await asyncio.gather(
            *(client.send(f"{i:064x}", NotificationContent(title="hi")) for i in range(1000))
        )
    finally:
        await client.aclose()
        await small.aclose()
    assert [result.ok for result in results] == [True] * 1000
    assert apns_simulator.counters()["provider_tokens"] == 1


async def test_a_token_older_than_50_minutes_is_replaced_once_by_racing_instances(
    redis: aioredis.Redis, key: ec.EllipticCurvePrivateKey
) -> None:
    issued = int(NOW) - REFRESH_AFTER - 60
    old = mint(key, "KID", "TEAM", issued)
    await redis.set(REDIS_KEY, f"{issued}:{old}")
    instances = _instances(key, redis)
    tokens = await asyncio.gather(*(tokens.current() for tokens in instances))
    assert len(set(tokens)) == 1 and tokens[0] != old
    assert sum(tokens.minted for tokens in instances) == 1
    assert await _stored(redis) == f"{int(NOW)}:{tokens[0]}"


async def test_a_token_younger_than_50_minutes_is_reused(
    redis: aioredis.Redis, key: ec.EllipticCurvePrivateKey
) -> None:
    issued = int(NOW) - REFRESH_AFTER + 60
    young = mint(key, "KID", "TEAM", issued)
    await redis.set(REDIS_KEY, f"{issued}:{young}")
    instances = _instances(key, redis)
    assert set(await asyncio.gather(*(tokens.current() for tokens in instances))) == {young}
    assert sum(tokens.minted for tokens in instances) == 0


@pytest.mark.parametrize("seen_before", [True, False], ids=["after-current", "fresh-instances"])
async def test_a_rejected_token_is_replaced_once_however_many_instances_refresh_it(
    redis: aioredis.Redis, key: ec.EllipticCurvePrivateKey, seen_before: bool
) -> None:
    rejected = mint(key, "KID", "TEAM", int(NOW) - 60)
    await redis.set(REDIS_KEY, f"{int(NOW) - 60}:{rejected}")
    instances = _instances(key, redis)
    if seen_before:
        assert set(await asyncio.gather(*(tokens.current() for tokens in instances))) == {rejected}
    replacements = await asyncio.gather(*(tokens.refresh(rejected) for tokens in instances))
    assert len(set(replacements)) == 1 and replacements[0] != rejected
    assert sum(tokens.minted for tokens in instances) == 1
    assert await _stored(redis) == f"{int(NOW)}:{replacements[0]}"
    # The same rejection reported again later (a slow request) does not replace the replacement.
    assert await instances[0].refresh(rejected) == replacements[0]
    assert sum(tokens.minted for tokens in instances) == 1


def _pem(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    "pem",
    [
        _pem(ec.generate_private_key(ec.SECP384R1())),
        _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        _pem(ec.generate_private_key(ec.SECP256R1()))[:200],  # truncated .p8
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n",
        b"\x00garbage\xff" * 20,
    ],
    ids=["p384", "rsa", "truncated", "not-der", "binary"],
)
def test_unusable_signing_keys_are_refused_without_revealing_them(pem: bytes) -> None:
    with pytest.raises(CredentialKeyError) as raised:
        load_signing_key(pem)
    shown = "".join(traceback.format_exception(raised.value))
    secret_lines = [line for line in pem.decode(errors="replace").splitlines() if line and "-----" not in line]
    assert not any(line[:16] in shown for line in secret_lines)
    assert "APNs signing key" in str(raised.value)


def _sender_config(tmp_path: Path, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str = "TEAM123456") -> Any:
    key_file = tmp_path / f"{key_id}-{id(key)}.p8"
    key_file.write_bytes(_pem(key))
    return Settings.defaults(
        apns_team_id=team_id, apns_key_id=key_id, apns_key_file=key_file, apns_bundle_id="com.example.app",
        apns_environment="sandbox",
    ).sender  # fmt: skip


@pytest.mark.parametrize("rotation", ["new-key-id", "same-key-id-new-key", "new-team"])
async def test_a_rotated_key_is_sent_with_a_token_of_the_new_identity_at_once(
    redis: aioredis.Redis, tmp_path: Path, rotation: str
) -> None:
    from noti.sender.service import build_client

    old_key = ec.generate_private_key(ec.SECP256R1())
    old = _sender_config(tmp_path, old_key, "OLDKEY1234")
    new_key = old_key if rotation == "new-team" else ec.generate_private_key(ec.SECP256R1())
    new = _sender_config(
        tmp_path, new_key, "OLDKEY1234" if rotation == "same-key-id-new-key" else "NEWKEY1234",
        "TEAM999999" if rotation == "new-team" else "TEAM123456",
    )  # fmt: skip
    before, after = build_client(old, redis), build_client(new, redis)
    try:
        assert before.tokens is not None and after.tokens is not None
        await before.tokens.current()  # the old senders' token, shared in Redis for 50 minutes
        token = await after.tokens.current()
    finally:
        await before.aclose()
        await after.aclose()
    assert jwt.get_unverified_header(token)["kid"] == new.apns_key_id
    claims = jwt.decode(token, new_key.public_key(), algorithms=["ES256"])  # signed by the new key
    assert claims["iss"] == new.apns_team_id


async def test_a_stored_token_of_another_identity_under_our_name_is_replaced(
    redis: aioredis.Redis, key: ec.EllipticCurvePrivateKey
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    foreign = [mint(key, "OTHERKID", "TEAM", int(NOW) - 60), mint(key, "KID", "OTHERTEAM", int(NOW) - 60),
               mint(other, "KID", "TEAM", int(NOW) - 60), "not a token"]  # fmt: skip
    for stored in foreign:
        await redis.set(REDIS_KEY, f"{int(NOW) - 60}:{stored}")
        tokens = ProviderTokens(key, "KID", "TEAM", redis=redis, redis_key=REDIS_KEY, clock=lambda: NOW)
        token = await tokens.current()
        assert token != stored and tokens.minted == 1
        assert jwt.get_unverified_header(token)["kid"] == "KID"
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_iat": False})
        assert claims["iss"] == "TEAM"
        assert await _stored(redis) == f"{int(NOW)}:{token}"


def test_the_shared_token_is_named_by_team_key_id_and_key_fingerprint(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    names = {
        ProviderTokens(key, "KID", "TEAM").redis_key,
        ProviderTokens(key, "KID2", "TEAM").redis_key,
        ProviderTokens(key, "KID", "TEAM2").redis_key,
        ProviderTokens(other, "KID", "TEAM").redis_key,
    }
    assert len(names) == 4
    assert ProviderTokens(key, "KID", "TEAM").redis_key == ProviderTokens(key, "KID", "TEAM").redis_key
    assert not any(_pem(key).decode().splitlines()[1][:16] in name for name in names)


def test_an_apns_client_without_redis_loads_neither_redis_nor_the_store() -> None:
    """Every module loaded is walked by each full garbage collection: SQLAlchemy and redis were ~55k objects."""
    script = (
        "import sys, noti.apns.client, noti.apns.tokens\n"
        "print(*[name for name, module in sys.modules.items() if module])"
    )
    # Away from the repository root, whose operator/ folder shadows the stdlib's.
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    )
    loaded = set(out.stdout.split())
    assert not {"redis", "sqlalchemy", "noti.queue", "noti.store"} & loaded
