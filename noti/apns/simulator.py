"""An APNs simulator: Apple's provider API over TLS HTTP/2, with fault injection and counters.

It checks what Apple checks (device token, headers, topic against the key's bundle ids,
the ES256 provider token's signature and age, payload JSON and size) and answers with
Apple's status codes and reasons. It is a bare asyncio protocol on jh2 (h2's Rust-backed
fork), so it is not the bottleneck of what it measures; ``workers`` processes may share
one port with SO_REUSEPORT.

Control (HTTP/1.1 JSON on ``control_port``): ``GET /counters``, ``POST /faults`` (a
partial :class:`Faults`), ``POST /reset`` (counters), ``POST /keys`` (register a key:
``{"team_id", "key_id", "bundle_ids": [...], "public_key_pem"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import click
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jh2.config import H2Configuration
from jh2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from jh2.settings import SettingCodes

from noti.apns.h2 import CountingH2Connection, H2Protocol
from noti.apns.payload import MAX_COLLAPSE_ID, MAX_PAYLOAD, MAX_VOIP_PAYLOAD, PUSH_TYPES, TOPIC_SUFFIXES

TOKEN_MAX_AGE = 3600  # seconds Apple accepts a provider token after its iat
APPLE_MAX_CONCURRENT_STREAMS = 1000


@dataclass
class Faults:
    """What the simulator does wrong on purpose."""

    latency_ms: float = 0.0  # added to every response
    latency_jitter_ms: float = 0.0  # plus a uniform 0..jitter
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    goaway_after: int = 0  # GOAWAY a connection after this many streams (0: never)
    goaway_reason: str = "Shutdown"  # the JSON reason in that GOAWAY's debug data, as Apple sends it
    drop_rate: float = 0.0  # chance a request kills its connection without answering
    unregistered: list[str] = field(default_factory=list)  # tokens answered 410 Unregistered
    bad_tokens: list[str] = field(default_factory=list)  # tokens answered 400 BadDeviceToken

    def update(self, changes: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        return replace(self, **changes)


@dataclass(frozen=True)
class RegisteredKey:
    team_id: str
    key_id: str
    bundle_ids: tuple[str, ...]
    public_key_pem: str


class State:
    """Keys, faults and counters of one simulator process."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.keys: dict[tuple[str, str], RegisteredKey] = {}
        self._public_keys: dict[tuple[str, str], Any] = {}
        self._verified: dict[str, tuple[str, str, int]] = {}  # jwt → (team, kid, iat)
        self.by_outcome: Counter[str] = Counter()
        self.by_token: Counter[str] = Counter()
        self.provider_tokens: set[str] = set()
        self._sets()

    def _sets(self) -> None:
        self.unregistered = {t.lower() for t in self.faults.unregistered}
        self.bad_tokens = {t.lower() for t in self.faults.bad_tokens}

    def set_faults(self, changes: dict[str, Any]) -> None:
        self.faults = self.faults.update(changes)
        self._sets()

    def register(self, key: RegisteredKey) -> None:
        self.keys[(key.team_id, key.key_id)] = key
        self._public_keys[(key.team_id, key.key_id)] = serialization.load_pem_public_key(key.public_key_pem.encode())

    def reset(self) -> None:
        self.by_outcome.clear()
        self.by_token.clear()
        self.provider_tokens.clear()

    def counters(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_outcome.values()),
            "by_outcome": dict(self.by_outcome),
            "by_token": dict(self.by_token),
            "provider_tokens": len(self.provider_tokens),
            # Fingerprints, not tokens: workers' sets merge into one count of distinct tokens.
            "provider_token_ids": sorted(hashlib.sha256(t.encode()).hexdigest()[:16] for t in self.provider_tokens),
        }

    def authenticate(self, authorization: str | None, now: float) -> tuple[str | None, RegisteredKey | None]:
        """(reason, key): reason is None when the provider token is good."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return "MissingProviderToken", None
        token = authorization[7:].strip()
        known = self._verified.get(token)
        if known is None:
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(token, options={"verify_signature": False})
                team, kid, iat = str(claims["iss"]), str(header["kid"]), int(claims["iat"])
            except (jwt.PyJWTError, KeyError, TypeError, ValueError):
                return "InvalidProviderToken", None
            public = self._public_keys.get((team, kid))
            if public is None or header.get("alg") != "ES256":
                return "InvalidProviderToken", None
            try:
                jwt.decode(token, public, algorithms=["ES256"], options={"verify_iat": False})
            except jwt.PyJWTError:
                return "InvalidProviderToken", None
            known = (team, kid, iat)
            self._verified[token] = known
        team, kid, iat = known
        if now - iat > TOKEN_MAX_AGE:
            return "ExpiredProviderToken", None
        self.provider_tokens.add(token)
        return None, self.keys[(team, kid)]


def _topic_allowed(topic: str, push_type: str, bundle_ids: tuple[str, ...]) -> bool:
    return topic in {bundle + TOPIC_SUFFIXES.get(push_type, "") for bundle in bundle_ids}


def certificate_topics(peercert: dict[str, Any] | None) -> tuple[str, ...]:
    """The bundle ids a provider certificate may push to: its subject's UID, as in Apple's certificates."""
    if not peercert:
        return ()
    return tuple(value for rdn in peercert.get("subject", ()) for name, value in rdn if name == "userId")


def judge(
    state: State, path: str, method: str, headers: dict[str, str], body: bytes, now: float,
    cert_topics: tuple[str, ...] = (),
) -> tuple[int, dict[str, Any] | None]:  # fmt: skip
    """Apple's answer to one request: (status, JSON error body or None on success).

    ``cert_topics``: the bundle ids of the client certificate the connection presented (certificate
    auth); a request without a provider token is then authenticated by it.
    """
    if method != "POST":
        return 405, {"reason": "MethodNotAllowed"}
    if not path.startswith("/3/device/"):
        return 404, {"reason": "BadPath"}
    token = path[len("/3/device/") :].lower()
    if not token:
        return 400, {"reason": "MissingDeviceToken"}
    authorization = headers.get("authorization")
    by_certificate = bool(cert_topics) and not authorization
    if by_certificate:
        bundle_ids = cert_topics
    else:
        reason, key = state.authenticate(authorization, now)
        if reason is not None:
            return 403, {"reason": reason}
        assert key is not None
        bundle_ids = key.bundle_ids
    push_type = headers.get("apns-push-type", "alert")
    if push_type not in PUSH_TYPES:
        return 400, {"reason": "InvalidPushType"}
    topic = headers.get("apns-topic")
    if not topic and by_certificate and len(cert_topics) == 1:
        topic = cert_topics[0]  # Apple defaults to a single-topic certificate's subject
    if not topic:
        return 400, {"reason": "MissingTopic"}
    if not _topic_allowed(topic, push_type, bundle_ids):
        return 400, {"reason": "TopicDisallowed"}
    if headers.get("apns-priority", "10") not in {"10", "5", "1"}:
        return 400, {"reason": "BadPriority"}
    expiration = headers.get("apns-expiration")
    if expiration is not None and not expiration.isdigit():
        return 400, {"reason": "BadExpirationDate"}
    if len(headers.get("apns-collapse-id", "").encode()) > MAX_COLLAPSE_ID:
        return 400, {"reason": "BadCollapseId"}
    apns_id = headers.get("apns-id")
    if apns_id is not None:
        try:
            uuid.UUID(apns_id)
        except ValueError:
            return 400, {"reason": "BadMessageId"}
    if len(token) < 64 or len(token) % 2 or any(c not in "0123456789abcdef" for c in token):
        return 400, {"reason": "BadDeviceToken"}
    if not body:
        return 400, {"reason": "PayloadEmpty"}
    if len(body) > (MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD):
        return 413, {"reason": "PayloadTooLarge"}
    try:
        document = json.loads(body)
    except ValueError:
        return 400, {"reason": "BadPayload"}
    if not isinstance(document, dict) or not isinstance(document.get("aps"), dict):
        return 400, {"reason": "BadPayload"}
    if token in state.bad_tokens:
        return 400, {"reason": "BadDeviceToken"}
    if token in state.unregistered:
        return 410, {"reason": "Unregistered", "timestamp": int(now * 1000)}
    faults = state.faults
    roll = random.random()
    for rate, status, why in (
        (faults.rate_429, 429, "TooManyRequests"),
        (faults.rate_500, 500, "InternalServerError"),
        (faults.rate_503, 503, "ServiceUnavailable"),
    ):
        if roll < rate:
            return status, {"reason": why}
        roll -= rate
    return 200, None


class _Stream:
    __slots__ = ("body", "headers")

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.body = bytearray()


class APNsProtocol(H2Protocol):
    """One client connection: HTTP/2 frames in, Apple's answers out."""

    def __init__(self, state: State, max_concurrent_streams: int) -> None:
        self.state = state
        # Requests are validated as Apple's HTTP/2 layer would; our own constant, lowercase
        # response headers need no second pass.
        config = H2Configuration(
            client_side=False,
            header_encoding="utf-8",
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = CountingH2Connection(config=config)
        self.max_concurrent_streams = max_concurrent_streams
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.served = 0
        self.closing = False
        self.cert_topics: tuple[str, ...] = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.cert_topics = certificate_topics(self.transport.get_extra_info("peercert"))
        self.h2.initiate_connection()
        self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams})
        self.transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after our GOAWAY: the client will resend what we did not process elsewhere
        try:
            events = self.h2.receive_data(data)
        except Exception:  # a protocol error: Apple closes the connection too
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = _Stream(dict(event.headers))
            elif isinstance(event, DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self._request_complete(event.stream_id)
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
                self.h2.forget(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self._abort()
                return
        self._flush()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def _request_complete(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None or self.closing:
            return
        faults = self.state.faults
        if faults.drop_rate and random.random() < faults.drop_rate:
            self.state.by_outcome["Dropped"] += 1
            self._abort()
            return
        headers = stream.headers
        status, error = judge(
            self.state, headers.get(":path", ""), headers.get(":method", ""), headers, bytes(stream.body), time.time(),
            self.cert_topics,
        )  # fmt: skip
        token = headers.get(":path", "").rsplit("/", 1)[-1].lower()
        self.state.by_outcome[error["reason"] if error else "Success"] += 1
        self.state.by_token[token] += 1
        self.served += 1
        delay = faults.latency_ms + (random.random() * faults.latency_jitter_ms if faults.latency_jitter_ms else 0.0)
        goaway = bool(faults.goaway_after) and self.served >= faults.goaway_after
        if goaway:
            self.closing = True
        respond = (stream_id, status, error, headers.get("apns-id"), goaway)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay / 1000, self._respond, *respond)
        else:
            self._respond(*respond)

    def _respond(
        self, stream_id: int, status: int, error: dict[str, Any] | None, apns_id: str | None, goaway: bool
    ) -> None:
        if self.transport is None:
            return
        response_headers = [(":status", str(status)), ("apns-id", apns_id or str(uuid.uuid4()))]
        try:
            if error is None:
                self.h2.send_headers(stream_id, response_headers, end_stream=True)
            else:
                body = json.dumps(error).encode()
                response_headers.append(("content-type", "application/json"))
                response_headers.append(("content-length", str(len(body))))
                self.h2.send_headers(stream_id, response_headers)
                self.h2.send_data(stream_id, body, end_stream=True)
            if goaway:
                # Like Apple's Shutdown: streams above stream_id were not processed and may be retried.
                debug = json.dumps({"reason": self.state.faults.goaway_reason}).encode()
                self.h2.close_connection(error_code=0, last_stream_id=stream_id, additional_data=debug)
        except Exception:  # the stream or connection went away meanwhile
            return
        self.h2.forget(stream_id)
        self._flush_soon()
        if goaway and self.transport is not None:
            transport = self.transport
            asyncio.get_running_loop().call_later(0.05, transport.close)


def generate_certificate(directory: Path, hostnames: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
    """A self-signed TLS certificate for ``hostnames``: (cert path, key path). The cert is its own CA."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "noti APNs simulator")])
    alt_names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "apns-sim.crt", directory / "apns-sim.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _ssl_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
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


def _apply(state: State, command: str, argument: Any) -> Any:
    if command == "counters":
        return state.counters()
    if command == "faults":
        state.set_faults(argument)
        return asdict(state.faults)
    if command == "reset":
        state.reset()
        return {"reset": True}
    if command == "keys":
        state.register(
            RegisteredKey(
                argument["team_id"], argument["key_id"], tuple(argument["bundle_ids"]), argument["public_key_pem"]
            )
        )
        return {"registered": f"{argument['team_id']}/{argument['key_id']}"}
    raise ValueError(f"unknown command {command}")


def _merge_counters(parts: list[dict[str, Any]]) -> dict[str, Any]:
    by_outcome: Counter[str] = Counter()
    by_token: Counter[str] = Counter()
    token_ids: set[str] = set()
    for part in parts:
        by_outcome.update(part["by_outcome"])
        by_token.update(part["by_token"])
        token_ids.update(part["provider_token_ids"])
    return {
        "total": sum(by_outcome.values()),
        "by_outcome": dict(by_outcome),
        "by_token": dict(by_token),
        "provider_tokens": len(token_ids),
        "provider_token_ids": sorted(token_ids),
    }


class Simulator:
    """A running simulator: in this process (workers == 1) or in worker processes sharing the port."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.state = State(config.faults)
        for key in config.keys:
            self.state.register(key)
        self._servers: list[asyncio.AbstractServer] = []
        self._workers: list[tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.port = config.port
        self.control_port: int | None = None
        self.cert_path: Path = Path()
        self.key_path: Path = Path()

    @property
    def url(self) -> str:
        return f"https://{self.config.host}:{self.port}"

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
            context = _ssl_context(self.cert_path, self.key_path, self.config.client_ca)
            server = await loop.create_server(
                lambda: APNsProtocol(self.state, self.config.max_concurrent_streams), sock=sock, ssl=context
            )
            self._servers.append(server)
        else:
            probe = _listening_socket(self.config.host, self.config.port, reuse_port=True)
            self.port = probe.getsockname()[1]
            spawn = multiprocessing.get_context("spawn")
            for _ in range(self.config.workers):
                parent, child = spawn.Pipe()
                process = spawn.Process(
                    target=_worker_main,
                    args=(
                        replace(
                            self.config,
                            port=self.port,
                            cert=self.cert_path,
                            key=self.key_path,
                            control_port=None,
                            workers=1,
                        ),
                        child,
                    ),
                    daemon=True,
                )
                process.start()
                self._workers.append((process, parent))
            for _, conn in self._workers:
                await loop.run_in_executor(None, conn.recv)  # each worker says it listens
            probe.close()
        if self.config.control_port is not None:
            control = await asyncio.start_server(self._control, self.config.host, self.config.control_port)
            self._servers.append(control)
            self.control_port = control.sockets[0].getsockname()[1]
        return self

    async def command(self, name: str, argument: Any = None) -> Any:
        """Run a control command on this simulator (every worker of it)."""
        if not self._workers:
            return _apply(self.state, name, argument)
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
            return _merge_counters(answers)
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

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _ = request_line.decode().split(" ", 2)
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = json.loads(await reader.readexactly(length)) if length else {}
                status, answer = 200, None
                routes = {
                    ("GET", "/counters"): "counters",
                    ("POST", "/faults"): "faults",
                    ("POST", "/reset"): "reset",
                    ("POST", "/keys"): "keys",
                }
                command = routes.get((method, path.rstrip("/") or "/"))
                if command is None:
                    status, answer = 404, {"error": f"no such control route: {method} {path}"}
                else:
                    try:
                        answer = await self.command(command, body)
                    except (ValueError, KeyError, TypeError) as exc:
                        status, answer = 400, {"error": str(exc)}
                payload = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def stop(self) -> None:
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


async def _run_command(state: State, name: str, argument: Any) -> Any:
    return _apply(state, name, argument)


def _worker_main(config: SimulatorConfig, conn: multiprocessing.connection.Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        state = State(config.faults)
        for key in config.keys:
            state.register(key)
        sock = _listening_socket(config.host, config.port, reuse_port=True)
        server = await loop.create_server(
            lambda: APNsProtocol(state, config.max_concurrent_streams),
            sock=sock,
            ssl=_ssl_context(config.cert, config.key, config.client_ca),  # type: ignore[arg-type]
        )
        conn.send("listening")
        stop = asyncio.Event()

        def listen() -> None:
            while True:
                try:
                    name, argument = conn.recv()
                except EOFError:
                    loop.call_soon_threadsafe(stop.set)
                    return
                if name == "stop":
                    loop.call_soon_threadsafe(stop.set)
                    return
                future = asyncio.run_coroutine_threadsafe(_run_command(state, name, argument), loop)
                try:
                    conn.send(future.result())
                except Exception as exc:
                    conn.send(ValueError(str(exc)))

        threading.Thread(target=listen, daemon=True).start()
        await stop.wait()
        server.close()

    asyncio.run(serve())


def _read_tokens(path: Path | None) -> list[str]:
    if path is None:
        return []
    return [line.strip().lower() for line in path.read_text().splitlines() if line.strip()]


def _parse_key(spec: str) -> RegisteredKey:
    try:
        team_id, key_id, bundles, pem_file = spec.split(":", 3)
    except ValueError:
        raise click.BadParameter("expected TEAM:KID:BUNDLE[,BUNDLE...]:PUBLIC_OR_PRIVATE_KEY_FILE") from None
    pem = Path(pem_file).read_bytes()
    if b"PRIVATE KEY" in pem:
        private = serialization.load_pem_private_key(pem, password=None)
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return RegisteredKey(team_id, key_id, tuple(bundles.split(",")), pem.decode())


@click.command("apns-sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2197, show_default=True, help="TLS HTTP/2 port (0: any free port).")
@click.option("--control-port", default=2198, show_default=True, help="HTTP/1.1 JSON control port (0: any).")
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
@click.option("--max-concurrent-streams", default=APPLE_MAX_CONCURRENT_STREAMS, show_default=True)
@click.option(
    "--client-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Accept provider certificates signed by this CA (certificate auth; topic = the certificate's UID).",
)  # fmt: skip
def main(
    host: str,
    port: int,
    control_port: int,
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
    max_concurrent_streams: int,
    client_ca: Path | None,
) -> None:
    """Run an APNs simulator: Apple's provider API over TLS HTTP/2, with fault injection."""
    if bool(cert) != bool(tls_key):
        raise click.UsageError("--cert and --key go together")
    config = SimulatorConfig(
        host=host,
        port=port,
        control_port=control_port,
        cert=cert,
        key=tls_key,
        workers=workers,
        max_concurrent_streams=max_concurrent_streams,
        client_ca=client_ca,
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

    async def serve() -> None:
        simulator = await start(config)
        # Machine-readable first line: tests and scripts read the ports and CA from it.
        print(
            json.dumps(
                {
                    "url": simulator.url,
                    "control_port": simulator.control_port,
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

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
