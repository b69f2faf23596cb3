"""Pushy's MockApnsServer as a test-session service: an APNs server written by other hands.

Noti's client, simulator and tests share one author; Pushy (com.eatthepath:pushy, Java) is an
independent reading of Apple's rules. Our harness in tests/pushy/ starts it on loopback with a
certificate made like the simulator's, Pushy's validating handlers (topics, registered and expired
device tokens, the key's ES256 verification key) and a JSON line per decision, so a test can compare
what the client concluded with what the server decided. The jar comes from scripts/build-pushy.sh;
a missing one fails, never skips.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness.apns import BUNDLE_ID, KEY_ID, TEAM_ID, sender_environment
from harness.procs import SETUP_HINT, cache_dir, reap, started_in_temporary_directory
from noti.apns.payload import PUSH_TYPES, topic_for
from noti.apns.simulator import generate_certificate

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "tests" / "pushy"
BUILD_SCRIPT = "scripts/build-pushy.sh"
KNOWN_TOKENS = 600  # device tokens registered for every topic of the app: enough for the concurrency cases
APPLE_MAX_CONCURRENT_STREAMS = 1000  # what APNs announces in SETTINGS (Pushy's own default is 1500)
EXPIRED_TOKENS = 3


def versions() -> dict[str, str]:
    """The pinned versions in tests/pushy/versions.env."""
    text = (PROJECT / "versions.env").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def sources_hash() -> str:
    """The hash of the harness's sources, as scripts/build-pushy.sh computes it for the cache key."""
    files = [PROJECT / "pom.xml", PROJECT / "versions.env", *(p for p in (PROJECT / "src").rglob("*") if p.is_file())]
    digest = hashlib.sha256()
    for relative in sorted(path.relative_to(PROJECT).as_posix() for path in files):
        digest.update(f"{relative}\n".encode())
        digest.update((PROJECT / relative).read_bytes())
    return digest.hexdigest()[:12]


def jar_path() -> Path:
    """``$NOTI_PUSHY_JAR``, else the jar scripts/build-pushy.sh builds into the versioned cache."""
    if explicit := os.environ.get("NOTI_PUSHY_JAR"):
        return Path(explicit)
    pinned = versions()
    key = f"pushy-{pinned['PUSHY_VERSION']}_netty-{pinned['NETTY_VERSION']}_src-{sources_hash()}"
    return cache_dir() / "pushy" / key / "noti-pushy-mock.jar"


def pushy_jar() -> Path:
    """The built harness jar; a missing one raises, naming the build script."""
    jar = jar_path()
    if not jar.is_file():
        raise RuntimeError(
            f"the Pushy mock APNs server is not built at {jar}: run {BUILD_SCRIPT} "
            "(scripts/test.sh does, and exports NOTI_PUSHY_JAR)"
        )
    return jar


def java() -> str:
    found = shutil.which("java")
    if found is None:
        raise RuntimeError(f"java is not installed (the Pushy mock APNs server needs it): {SETUP_HINT}")
    return found


@dataclass(frozen=True)
class Decision:
    """What Pushy answered one request, from its decision log."""

    status: int
    reason: str | None
    timestamp: int | None  # ms since epoch the device token went invalid (410)
    device_token: str
    topic: str | None
    push_type: str | None
    apns_id: str | None  # the request's apns-id; None when the client sent none
    payload_bytes: int

    @property
    def outcome(self) -> str:
        """The reason, or "Success" (the simulator's counters use the same words)."""
        return self.reason or "Success"


@dataclass
class PushyServer:
    """A running Pushy MockApnsServer and what it was told: its key, topics and device tokens."""

    url: str
    ca_path: Path
    team_id: str
    key_id: str
    bundle_id: str
    key_path: Path  # the ES256 signing key (.p8 PEM) whose public half Pushy verifies with
    topics: tuple[str, ...]  # topics the key may push to (the bundle id with every push type's suffix)
    known_tokens: tuple[str, ...]  # registered for every topic
    expired_tokens: dict[str, int]  # token → ms since epoch Pushy calls it Unregistered from
    decisions_path: Path
    process: subprocess.Popen[str]
    _read: int = field(default=0, repr=False)

    @property
    def private_key_pem(self) -> bytes:
        return self.key_path.read_bytes()

    def all_decisions(self) -> list[Decision]:
        lines = self.decisions_path.read_text().splitlines()
        return [Decision(**json.loads(line)) for line in lines if line.strip()]

    def mark(self) -> None:
        """Forget the decisions so far: ``decisions()`` returns only later ones."""
        self._read = len(self.all_decisions())

    def decisions(self, *, expect: int = 0, timeout: float = 5.0) -> list[Decision]:
        """Decisions since the last ``mark()``; waits until there are at least ``expect`` of them.

        Pushy logs a decision right after writing its answer, so a client may have its answer a
        moment before the line is in the file.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.all_decisions()[self._read :]
            if len(found) >= expect or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def sender_env(self) -> dict[str, str]:
        """The environment the operator gives a sender Deployment for this credential."""
        return sender_environment(self)


def _token() -> str:
    return secrets.token_hex(32)


def start_pushy(directory: Path, *, known_tokens: int = KNOWN_TOKENS, now: float | None = None) -> PushyServer:
    """Start the harness jar with a fresh key, certificate and device tokens for BUNDLE_ID."""
    jar = pushy_jar()
    cert_path, tls_key_path = generate_certificate(directory, ("127.0.0.1", "localhost"))
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = directory / "AuthKey.p8"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public_path = directory / "AuthKey.pub.pem"
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    topics = tuple(sorted({topic_for(BUNDLE_ID, push_type) for push_type in PUSH_TYPES}))
    known = tuple(_token() for _ in range(known_tokens))
    moment = int((now if now is not None else time.time()) * 1000)
    expired = {_token(): moment - (index + 1) * 86_400_000 for index in range(EXPIRED_TOKENS)}
    decisions_path = directory / "decisions.jsonl"
    decisions_path.touch()
    command = [
        java(), "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-jar", str(jar),
        "--cert", str(cert_path), "--key", str(tls_key_path), "--port", "0",
        "--verification-key", f"{TEAM_ID}:{KEY_ID}:{public_path}:{','.join(topics)}",
        "--decisions", str(decisions_path), "--max-concurrent-streams", str(APPLE_MAX_CONCURRENT_STREAMS),
    ]  # fmt: skip
    for topic in topics:
        # One argument per topic: Linux caps a single argument at 128 KiB, about 2000 tokens.
        command += ["--device-token", f"{topic}={','.join(known)}"]
    for token, since in expired.items():
        command += ["--expired-token", f"{token}={since}"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        raise RuntimeError(f"the Pushy mock APNs server did not start (exit code {process.returncode})")
    info: dict[str, Any] = json.loads(line)
    return PushyServer(
        url=f"https://{info['host']}:{info['port']}",
        ca_path=cert_path,
        team_id=TEAM_ID,
        key_id=KEY_ID,
        bundle_id=BUNDLE_ID,
        key_path=key_path,
        topics=topics,
        known_tokens=known,
        expired_tokens=expired,
        decisions_path=decisions_path,
        process=process,
    )


def stop_pushy(server: PushyServer) -> None:
    """Close its stdin (it shuts down by itself), then make sure."""
    assert server.process.stdin is not None
    server.process.stdin.close()
    reap(server.process)


@pytest.fixture(scope="session")
def pushy_session() -> Iterator[PushyServer]:
    with started_in_temporary_directory("noti-pushy-", start_pushy, stop_pushy) as server:
        yield server


@pytest.fixture
def pushy(pushy_session: PushyServer) -> PushyServer:
    """The session's Pushy server, its earlier decisions forgotten."""
    pushy_session.mark()
    return pushy_session
