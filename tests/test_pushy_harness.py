"""The Pushy harness itself: one cache key for the build script and the fixture, a missing jar fails loudly."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness import pushy
from harness.pushy import REPO, PushyServer, jar_path, pushy_jar
from harness.tokens import FixedTokens, b64url_decode, der_signed_token
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.payload import NotificationContent
from noti.apns.tokens import load_signing_key, mint


def test_build_script_and_fixture_agree_on_the_cached_jar(pushy_session: PushyServer) -> None:
    env = {key: value for key, value in os.environ.items() if key != "NOTI_PUSHY_JAR"}
    built = subprocess.run(
        ["scripts/build-pushy.sh"], cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=600
    )
    assert Path(built.stdout.splitlines()[-1]) == jar_path()
    assert "cached in" in built.stderr  # the session's server already came from it: no second build


def test_a_changed_harness_source_is_a_new_cache_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTI_PUSHY_JAR", raising=False)
    before = jar_path()
    copy = tmp_path / "pushy"
    subprocess.run(["cp", "-r", str(pushy.PROJECT), str(copy)], check=True)
    (copy / "src" / "main" / "java" / "dev" / "noti" / "pushymock" / "Main.java").write_text("// changed\n")
    monkeypatch.setattr(pushy, "PROJECT", copy)
    assert jar_path() != before
    assert jar_path().parent.parent == before.parent.parent


def test_missing_jar_fails_naming_the_build_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTI_PUSHY_JAR", str(tmp_path / "absent.jar"))
    with pytest.raises(RuntimeError, match=r"scripts/build-pushy\.sh"):
        pushy_jar()


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel writes them) listening on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_server_listens_on_loopback_only(pushy_session: PushyServer) -> None:
    port = int(pushy_session.url.rsplit(":", 1)[1])
    # 127.0.0.1 (Java may bind it as the IPv4-mapped ::ffff:127.0.0.1), not 0.0.0.0 or ::
    assert len(listening_addresses(port)) == 1
    assert listening_addresses(port) <= {"0100007F", "0000000000000000FFFF00000100007F"}


def signature_shapes(token: str) -> set[str]:
    """What makes a raw R||S signature's DER form differ: a zero first byte (shorter INTEGER) or the high bit set
    (a leading 0x00)."""
    raw = b64url_decode(token.rsplit(".", 1)[1])
    shapes = set()
    for name, part in (("r", raw[:32]), ("s", raw[32:])):
        shapes.add(
            f"{name}-leading-zero" if part[0] == 0 else f"{name}-high-bit" if part[0] >= 0x80 else f"{name}-plain"
        )
    return shapes


async def test_every_shape_of_jws_signature_is_re_encoded_for_pushy_and_der_is_left_alone(pushy: PushyServer) -> None:
    """Pushy verifies DER only; the harness re-encodes raw R||S. Both INTEGER edge cases must survive it."""
    key = load_signing_key(pushy.private_key_pem)
    now = int(time.time())
    wanted = {f"{part}-{shape}" for part in "rs" for shape in ("leading-zero", "high-bit", "plain")}
    tokens: dict[str, str] = {}
    for _ in range(20_000):  # a zero first byte comes once in 256 signatures
        token = mint(key, pushy.key_id, pushy.team_id, now)
        for shape in signature_shapes(token) - set(tokens):
            tokens[shape] = token
        if set(tokens) == wanted:
            break
    assert set(tokens) == wanted
    tokens["der"] = der_signed_token(key, pushy.key_id, pushy.team_id, now)
    fixed = FixedTokens(key, pushy.key_id, pushy.team_id, "")
    client = APNsClient(
        pushy.bundle_id, endpoint=pushy.url, tokens=fixed, ssl_context=client_ssl_context(ca_file=pushy.ca_path)
    )
    try:
        answers = {}
        for shape, token in tokens.items():
            fixed.token = token
            answers[shape] = (await client.send(pushy.known_tokens[0], NotificationContent(title="t"))).status_code
    finally:
        await client.aclose()
    assert answers == dict.fromkeys(tokens, 200)
