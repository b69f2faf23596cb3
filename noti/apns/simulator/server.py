"""A running simulator: TLS listeners in this process or in worker processes sharing the port, and its control port."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import multiprocessing
import multiprocessing.connection
import signal
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from noti.apns.simulator.control import ControlServer, apply, merge_counters
from noti.apns.simulator.protocol import APPLE_MAX_CONCURRENT_STREAMS, APNsProtocol
from noti.apns.simulator.rules import RegisteredKey
from noti.apns.simulator.state import MAX_COUNTED_TOKENS, Faults, State
from noti.loops import install_uvloop
from noti.queue import ENVIRONMENTS


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    control_port: int | None = 0  # None: no control endpoint
    cert: Path | None = None
    key: Path | None = None
    workers: int = 1
    max_concurrent_streams: int = APPLE_MAX_CONCURRENT_STREAMS
    faults: Faults = field(default_factory=Faults)
    keys: list[RegisteredKey] = field(default_factory=list)
    client_ca: Path | None = None  # CA of provider certificates accepted for certificate auth
    environment: str = "sandbox"  # "sandbox" answers with apns-unique-id as Apple's development servers do
    max_counted_tokens: int = MAX_COUNTED_TOKENS  # device tokens in the counters' by_token, the latest kept
    # Channel management (Apple: its own host and port); None: none. Channels live in one process: workers == 1.
    channels_port: int | None = 0

    def __post_init__(self) -> None:
        problem = workers_problem(self.workers, self.channels_port is not None)
        if problem is not None:
            raise ValueError(problem)


def workers_problem(workers: int, channels: bool) -> str | None:
    """Why a simulator of ``workers`` processes cannot run as asked, or None."""
    if workers > 1 and channels:
        # Each worker would keep channels of its own: a broadcast would meet a channel only by chance.
        return "channel management keeps its channels in one process: use --workers 1, or --channels-port -1 for none"
    return None


def self_signed_ca(
    common_name: str, *, days: int = 365, hostnames: tuple[str, ...] = ()
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new P-256 key and a CA certificate it signs itself, for ``hostnames`` when given (TLS servers)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if hostnames:
        alt_names: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return key, builder.sign(key, hashes.SHA256())


def generate_certificate(directory: Path, hostnames: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
    """A self-signed TLS certificate for ``hostnames``: (cert path, key path). The cert is its own CA."""
    key, cert = self_signed_ca("noti APNs simulator", hostnames=hostnames)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "apns-sim.crt", directory / "apns-sim.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def server_ssl_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS context that serves HTTP/2 (ALPN h2) with ``cert``; with ``client_ca``, client certificates are checked."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        # Certificate auth: a client certificate is optional (token auth needs none) but must chain to client_ca.
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cafile=str(client_ca))
    context.set_alpn_protocols(["h2"])
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _listen(
    config: SimulatorConfig, state: State, sock: socket.socket, manage: bool = False
) -> asyncio.AbstractServer:
    assert config.cert is not None and config.key is not None
    context = server_ssl_context(config.cert, config.key, config.client_ca)
    sandbox = config.environment == "sandbox"
    return await asyncio.get_running_loop().create_server(
        lambda: APNsProtocol(state, config.max_concurrent_streams, sandbox, manage), sock=sock, ssl=context
    )


class Simulator:
    """A running simulator: in this process (workers == 1) or in worker processes sharing the port."""

    def __init__(self, config: SimulatorConfig) -> None:
        if config.environment not in ENVIRONMENTS:
            raise ValueError(f"environment is sandbox or production, not {config.environment!r}")
        self.config = config
        self.state = State(config.faults, config.keys, config.max_counted_tokens)
        self._servers: list[asyncio.AbstractServer] = []
        self._control: ControlServer | None = None
        self._workers: list[tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.port = config.port
        self.control_port: int | None = None
        self.channels_port: int | None = None
        self.cert_path: Path = Path()
        self.key_path: Path = Path()

    @property
    def url(self) -> str:
        return f"https://{self.config.host}:{self.port}"

    @property
    def channels_url(self) -> str | None:
        """The channel management origin (Apple's api-manage-broadcast host), or None without one."""
        return f"https://{self.config.host}:{self.channels_port}" if self.channels_port is not None else None

    @property
    def ca_path(self) -> Path:
        """The certificate clients must trust (self-signed unless files were given)."""
        return self.cert_path

    async def start(self) -> Simulator:
        if self.config.cert and self.config.key:
            self.cert_path, self.key_path = self.config.cert, self.config.key
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="noti-apns-sim-")
            self.cert_path, self.key_path = generate_certificate(Path(self._tmp.name), (self.config.host, "localhost"))
        loop = asyncio.get_running_loop()
        if self.config.workers <= 1:
            sock = _listening_socket(self.config.host, self.config.port, reuse_port=False)
            self.port = sock.getsockname()[1]
            config = replace(self.config, cert=self.cert_path, key=self.key_path)
            self._servers.append(await _listen(config, self.state, sock))
            if self.config.channels_port is not None:
                manage = _listening_socket(self.config.host, self.config.channels_port, reuse_port=False)
                self.channels_port = manage.getsockname()[1]
                self._servers.append(await _listen(config, self.state, manage, manage=True))
        else:
            probe = _listening_socket(self.config.host, self.config.port, reuse_port=True)
            self.port = probe.getsockname()[1]
            spawn = multiprocessing.get_context("spawn")
            worker_config = replace(
                self.config, port=self.port, cert=self.cert_path, key=self.key_path, control_port=None, workers=1,
                channels_port=None,
            )  # fmt: skip
            for _ in range(self.config.workers):
                parent, child = spawn.Pipe()
                process = spawn.Process(target=_worker_main, args=(worker_config, child), daemon=True)
                process.start()
                self._workers.append((process, parent))
            for _, conn in self._workers:
                await loop.run_in_executor(None, conn.recv)  # each worker says it listens
            probe.close()
        if self.config.control_port is not None:
            self._control = ControlServer(self.command)
            self.control_port = await self._control.start(self.config.host, self.config.control_port)
        return self

    async def command(self, name: str, argument: Any = None) -> Any:
        """Run a control command on this simulator (every worker of it)."""
        if not self._workers:
            return apply(self.state, name, argument)
        loop = asyncio.get_running_loop()

        def ask_all() -> list[Any]:
            for _, conn in self._workers:
                conn.send((name, argument))
            return [conn.recv() for _, conn in self._workers]

        answers = await loop.run_in_executor(None, ask_all)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        if name == "counters":
            return merge_counters(answers)
        return answers[0]

    async def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.command("counters")
        return result

    async def set_faults(self, **changes: Any) -> None:
        await self.command("faults", changes)

    async def register_key(self, team_id: str, key_id: str, bundle_ids: list[str], public_key_pem: str) -> None:
        await self.command(
            "keys", {"team_id": team_id, "key_id": key_id, "bundle_ids": bundle_ids, "public_key_pem": public_key_pem}
        )

    async def register_devices(self, devices: dict[str, list[str]]) -> None:
        """Turn the device registry on (if off) and add ``{token: [topic, ...]}`` to it."""
        await self.command("devices", {"devices": devices})

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.stop()
            self._control = None
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._servers.clear()
        for process, conn in self._workers:
            with contextlib.suppress(Exception):
                conn.send(("stop", None))
            process.join(5)
            if process.is_alive():
                process.kill()
        self._workers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


async def start(config: SimulatorConfig | None = None, **options: Any) -> Simulator:
    """Start a simulator in this event loop (``options`` are SimulatorConfig fields)."""
    return await Simulator(config or SimulatorConfig(**options)).start()


async def _apply_async(state: State, name: str, argument: Any) -> Any:
    return apply(state, name, argument)


def _worker_main(config: SimulatorConfig, conn: multiprocessing.connection.Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    install_uvloop()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        state = State(config.faults, config.keys, config.max_counted_tokens)
        server = await _listen(config, state, _listening_socket(config.host, config.port, reuse_port=True))
        conn.send("listening")
        stop = asyncio.Event()

        def listen() -> None:
            # Commands run on the event loop, between requests, so state never changes under a request.
            while True:
                try:
                    name, argument = conn.recv()
                except EOFError:
                    loop.call_soon_threadsafe(stop.set)
                    return
                if name == "stop":
                    loop.call_soon_threadsafe(stop.set)
                    return
                future = asyncio.run_coroutine_threadsafe(_apply_async(state, name, argument), loop)
                try:
                    conn.send(future.result())
                except Exception as exc:
                    conn.send(ValueError(str(exc)))

        threading.Thread(target=listen, daemon=True).start()
        await stop.wait()
        server.close()

    asyncio.run(serve())
