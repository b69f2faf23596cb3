"""The APNs simulator as a test-session service: a subprocess over TLS HTTP/2 on a random port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness.procs import free_port, reap, started_in_temporary_directory

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
BUNDLE_ID = "com.example.app"
# Another app of the same team: the key may push to its topic, but BUNDLE_ID's devices are not its
# own, so (with the device registry on) a sender misconfigured with it gets DeviceTokenNotForTopic.
OTHER_BUNDLE_ID = "com.example.other"


class ApnsServer(Protocol):
    """An APNs server under test (the simulator, Pushy's mock) and the token credential it takes."""

    team_id: str
    key_id: str
    key_path: Path
    bundle_id: str
    url: str
    ca_path: Path


def credential_for(bundle_id: str, environment: str = "sandbox") -> str:
    """The credential identity (``namespace/name``) the tests give the credential of a bundle id."""
    return f"tests/{bundle_id.lower()}-{environment}"


def sender_environment(server: ApnsServer) -> dict[str, str]:
    """The environment the operator gives a sender Deployment whose credential ``server`` takes."""
    return {
        "NOTI_CREDENTIAL": credential_for(server.bundle_id),
        "NOTI_APNS_TEAM_ID": server.team_id,
        "NOTI_APNS_KEY_ID": server.key_id,
        "NOTI_APNS_KEY_FILE": str(server.key_path),
        "NOTI_APNS_BUNDLE_ID": server.bundle_id,
        "NOTI_APNS_ENVIRONMENT": "sandbox",
        "NOTI_APNS_ENDPOINT": server.url,
        "NOTI_APNS_CA_FILE": str(server.ca_path),
        **({"NOTI_APNS_CHANNELS_ENDPOINT": channels} if (channels := getattr(server, "channels_url", "")) else {}),
    }


@dataclass(frozen=True)
class SimulatorProcess:
    """A running ``noti apns-sim`` and the credential registered with it."""

    url: str
    ca_path: Path
    control_url: str
    team_id: str
    key_id: str
    bundle_id: str
    key_path: Path  # the ES256 signing key (.p8 PEM), as a mounted Secret would hold it
    process: subprocess.Popen[str]
    channels_url: str = ""  # channel management (Apple's api-manage-broadcast host)

    @property
    def private_key_pem(self) -> bytes:
        return self.key_path.read_bytes()

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.control_url}{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def counters(self) -> dict[str, Any]:
        """What the simulator received: total, by_outcome (reason or Success), by_token, provider_tokens."""
        result: dict[str, Any] = self._control("GET", "/counters")
        return result

    def set_faults(self, **changes: Any) -> None:
        """Change fault injection (fields of noti.apns.simulator.Faults)."""
        self._control("POST", "/faults", changes)

    def register_devices(self, devices: dict[str, list[str]]) -> None:
        """Turn the device registry on: only these tokens exist, each for its topics (``{token: [topic, ...]}``)."""
        self._control("POST", "/devices", {"devices": devices})

    def clear_devices(self) -> None:
        """Turn the device registry off: every well-formed token exists, for every topic."""
        self._control("DELETE", "/devices")

    def reset(self) -> None:
        """Clear the counters, every fault and the device registry."""
        self._control("POST", "/reset")
        self.clear_devices()
        self.set_faults(
            latency_ms=0.0, latency_jitter_ms=0.0, rate_429=0.0, rate_500=0.0, rate_503=0.0,
            goaway_after=0, goaway_reason="Shutdown", drop_rate=0.0, unregistered=[], bad_tokens=[],
            expired_tokens=[], token_update_min_seconds=0.0,
        )  # fmt: skip

    def sender_env(self) -> dict[str, str]:
        """The environment the operator gives a sender Deployment for this credential."""
        return sender_environment(self)


def start_simulator(directory: Path, *, workers: int = 1, extra: tuple[str, ...] = ()) -> SimulatorProcess:
    """Start ``noti apns-sim`` with a freshly generated key registered for BUNDLE_ID."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = directory / "AuthKey.p8"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    command = [
        sys.executable, "-m", "noti.apns.simulator", "--port", str(free_port()), "--control-port", str(free_port()),
        "--channels-port", str(free_port()) if workers == 1 else "-1",  # channels live in one process
        "--workers", str(workers), "--register", f"{TEAM_ID}:{KEY_ID}:{BUNDLE_ID},{OTHER_BUNDLE_ID}:{key_path}", *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        raise RuntimeError(f"the APNs simulator did not start (exit code {process.returncode})")
    info = json.loads(line)
    return SimulatorProcess(
        url=info["url"],
        ca_path=Path(info["ca"]),
        control_url=f"http://127.0.0.1:{info['control_port']}",
        team_id=TEAM_ID,
        key_id=KEY_ID,
        bundle_id=BUNDLE_ID,
        key_path=key_path,
        process=process,
        channels_url=info.get("channels_url") or "",
    )


def stop_simulator(simulator: SimulatorProcess) -> None:
    simulator.process.terminate()
    reap(simulator.process)


@pytest.fixture(scope="session")
def apns_simulator_session() -> Iterator[SimulatorProcess]:
    with started_in_temporary_directory("noti-apns-", start_simulator, stop_simulator) as simulator:
        yield simulator


@pytest.fixture
def apns_simulator(apns_simulator_session: SimulatorProcess) -> SimulatorProcess:
    """The session's simulator with counters cleared and no faults."""
    apns_simulator_session.reset()
    return apns_simulator_session
