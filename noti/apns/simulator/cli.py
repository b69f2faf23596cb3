"""``noti apns-sim``: run the simulator from the command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization

from noti.apns.simulator.protocol import APPLE_MAX_CONCURRENT_STREAMS
from noti.apns.simulator.rules import Keyring, RegisteredKey
from noti.apns.simulator.server import SimulatorConfig, start, workers_problem
from noti.apns.simulator.state import Faults, parse_devices
from noti.loops import install_uvloop
from noti.queue import ENVIRONMENTS


def _read_tokens(path: Path | None) -> list[str]:
    if path is None:
        return []
    return [line.strip().lower() for line in path.read_text().splitlines() if line.strip()]


def _read_devices(path: Path | None) -> dict[str, list[str]] | None:
    if path is None:
        return None
    try:
        devices = json.loads(path.read_text())
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not JSON: {exc}", param_hint="--devices") from None
    try:
        if not isinstance(devices, dict):
            raise ValueError('expected {"<token>": ["<topic>", ...]}')
        parse_devices(devices)
    except ValueError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--devices") from None
    return devices


def _parse_key(spec: str) -> RegisteredKey:
    try:
        team_id, key_id, bundles, pem_file = spec.split(":", 3)
    except ValueError:
        raise click.BadParameter("expected TEAM:KID:BUNDLE[,BUNDLE...]:PUBLIC_OR_PRIVATE_KEY_FILE") from None
    try:
        pem = Path(pem_file).read_bytes()
        if b"PRIVATE KEY" in pem:
            private = serialization.load_pem_private_key(pem, password=None)
            pem = private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        key = RegisteredKey(team_id, key_id, tuple(bundles.split(",")), pem.decode())
        Keyring([key])  # refuses what is not a P-256 key
    except (OSError, ValueError, TypeError) as exc:
        raise click.BadParameter(f"{pem_file}: {exc}", param_hint="--register") from None
    return key


@click.command("apns-sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2197, show_default=True, help="TLS HTTP/2 port (0: any free port).")
@click.option("--control-port", default=2198, show_default=True, help="HTTP/1.1 JSON control port (0: any).")
@click.option(
    "--channels-port", default=2195, show_default=True,
    help="Channel management port (Apple's api-manage-broadcast host; 0: any free port, -1: none).",
)  # fmt: skip
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TLS certificate (PEM).")
@click.option("--key", "tls_key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Its private key.")
@click.option("--workers", default=1, show_default=True, help="Processes sharing the port (SO_REUSEPORT).")
@click.option("--register", "keys", multiple=True, help="TEAM:KID:BUNDLE[,BUNDLE]:KEYFILE, repeatable.")
@click.option("--latency-ms", default=0.0, show_default=True)
@click.option("--latency-jitter-ms", default=0.0, show_default=True)
@click.option("--error-rate-429", default=0.0, show_default=True)
@click.option("--error-rate-500", default=0.0, show_default=True)
@click.option("--error-rate-503", default=0.0, show_default=True)
@click.option("--goaway-after", default=0, show_default=True, help="GOAWAY each connection after N streams.")
@click.option("--drop-rate", default=0.0, show_default=True, help="Chance a request drops its connection.")
@click.option(
    "--unregistered", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Tokens answered 410."
)
@click.option("--bad-tokens", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Tokens answered 400.")
@click.option(
    "--devices", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Device registry, JSON {"<token>": ["<topic>", ...]}: other tokens get BadDeviceToken, other topics '
    "DeviceTokenNotForTopic.",
)  # fmt: skip
@click.option(
    "--environment", type=click.Choice(ENVIRONMENTS), default="sandbox", show_default=True,
    help="sandbox answers with apns-unique-id, as Apple's development servers do.",
)  # fmt: skip
@click.option("--max-concurrent-streams", default=APPLE_MAX_CONCURRENT_STREAMS, show_default=True)
@click.option(
    "--client-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Accept provider certificates signed by this CA (certificate auth; topic = the certificate's UID).",
)  # fmt: skip
def main(
    host: str,
    port: int,
    control_port: int,
    channels_port: int,
    cert: Path | None,
    tls_key: Path | None,
    workers: int,
    keys: tuple[str, ...],
    latency_ms: float,
    latency_jitter_ms: float,
    error_rate_429: float,
    error_rate_500: float,
    error_rate_503: float,
    goaway_after: int,
    drop_rate: float,
    unregistered: Path | None,
    bad_tokens: Path | None,
    devices: Path | None,
    environment: str,
    max_concurrent_streams: int,
    client_ca: Path | None,
) -> None:
    """Run an APNs simulator: Apple's provider API over TLS HTTP/2, with fault injection."""
    if bool(cert) != bool(tls_key):
        raise click.UsageError("--cert and --key go together")
    problem = workers_problem(workers, channels_port >= 0)
    if problem is not None:
        raise click.UsageError(problem)
    config = SimulatorConfig(
        host=host,
        port=port,
        control_port=control_port,
        channels_port=None if channels_port < 0 else channels_port,
        cert=cert,
        key=tls_key,
        workers=workers,
        max_concurrent_streams=max_concurrent_streams,
        client_ca=client_ca,
        environment=environment,
        faults=Faults(
            latency_ms=latency_ms,
            latency_jitter_ms=latency_jitter_ms,
            rate_429=error_rate_429,
            rate_500=error_rate_500,
            rate_503=error_rate_503,
            goaway_after=goaway_after,
            drop_rate=drop_rate,
            unregistered=_read_tokens(unregistered),
            bad_tokens=_read_tokens(bad_tokens),
        ),
        keys=[_parse_key(spec) for spec in keys],
    )

    registry = _read_devices(devices)

    async def serve() -> None:
        simulator = await start(config)
        if registry is not None:
            await simulator.register_devices(registry)
        # Machine-readable first line: tests and scripts read the ports and CA from it.
        print(
            json.dumps(
                {
                    "url": simulator.url,
                    "control_port": simulator.control_port,
                    "channels_url": simulator.channels_url,
                    "ca": str(simulator.ca_path),
                    "pid": os.getpid(),
                }
            ),
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await simulator.stop()

    install_uvloop()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
