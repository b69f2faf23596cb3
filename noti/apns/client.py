"""The APNs client the sender uses: httpx's API over our HTTP/2 transport, token or certificate auth."""

from __future__ import annotations

import os
import ssl
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, pkcs12

from noti.apns.payload import NotificationContent, build_headers, build_payload
from noti.apns.reasons import CONNECTION_ERROR, REASONS, Classification, Outcome, classify
from noti.apns.tokens import ProviderTokens
from noti.apns.transport import H2Transport

ENDPOINTS = {"production": "https://api.push.apple.com", "sandbox": "https://api.sandbox.push.apple.com"}


@dataclass(frozen=True, slots=True)
class APNsResult:
    """What APNs said about one notification, classified."""

    status_code: int  # 0 when no answer came (connection error)
    reason: str | None
    apns_id: str | None
    outcome: Outcome
    retry_after: float = 0.0
    timestamp: int | None = None  # ms since epoch the token went invalid (410)
    latency: float = 0.0  # seconds
    apns_unique_id: str | None = None  # apns-unique-id: the sandbox's id for Apple's Push Notifications Console

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


def _result(
    status: int, reason: str | None, apns_id: str | None, classification: Classification, **extra: object
) -> APNsResult:
    return APNsResult(status, reason, apns_id, classification.outcome, classification.retry_after, **extra)  # type: ignore[arg-type]


def client_ssl_context(
    *, ca_file: str | Path | None = None, cert_file: str | Path | None = None, key_file: str | Path | None = None,
    p12_file: str | Path | None = None, p12_password: bytes | None = None,
) -> ssl.SSLContext:  # fmt: skip
    """TLS for APNs: ALPN h2, the system CAs (or ``ca_file``), and a client certificate for certificate auth."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.set_alpn_protocols(["h2"])
    if p12_file is not None:
        key, cert, chain = pkcs12.load_key_and_certificates(Path(p12_file).read_bytes(), p12_password)
        if key is None or cert is None:
            raise ValueError("the .p12 file holds no certificate and private key")
        fd, pem_path = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
                handle.write(cert.public_bytes(Encoding.PEM))
                for extra in chain:
                    handle.write(extra.public_bytes(Encoding.PEM))
            context.load_cert_chain(pem_path)
        finally:
            os.unlink(pem_path)
    elif cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


class APNsClient:
    """Sends notifications for one app (topic) with one credential over long-lived HTTP/2 connections."""

    def __init__(
        self,
        bundle_id: str,
        *,
        environment: str = "production",
        endpoint: str | None = None,
        tokens: ProviderTokens | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connections: int = 2,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        proxy: str | None = None,
    ) -> None:
        if endpoint is None:
            if environment not in ENDPOINTS:
                raise ValueError(f"environment must be sandbox or production, not {environment!r}")
            endpoint = ENDPOINTS[environment]
        self.bundle_id = bundle_id
        self.tokens = tokens
        self.transport = transport or H2Transport(
            ssl_context or client_ssl_context(), connections=connections, proxy=proxy
        )
        self._http = httpx.AsyncClient(base_url=endpoint, transport=self.transport, timeout=timeout)
        url = httpx.URL(endpoint)
        self._origin = (url.host, url.port or 443)
        self._path_prefix = url.raw_path.decode().rstrip("/")
        self._read_timeout = timeout
        self._h2 = self.transport if isinstance(self.transport, H2Transport) else None

    async def send(
        self, device_token: str, content: NotificationContent, *, apns_id: str | uuid.UUID | None = None,
        payload: bytes | None = None,
    ) -> APNsResult:  # fmt: skip
        """Send one notification; never raises for APNs' answers or connection trouble, it classifies them."""
        body = payload if payload is not None else build_payload(content)
        headers = build_headers(content, self.bundle_id, apns_id)
        started = time.perf_counter()
        refreshed = False
        answer: bytes | bytearray
        while True:
            token = await self.tokens.current() if self.tokens is not None else None
            if token is not None:
                headers["authorization"] = f"bearer {token}"
            try:
                if self._h2 is not None:  # the hot path, straight onto our connections (see _post)
                    host, port = self._origin
                    raw = await self._h2.exchange(
                        host, port, "POST", f"{self._path_prefix}/3/device/{device_token}", list(headers.items()),
                        body, self._read_timeout,
                    )  # fmt: skip
                    status, response_headers, answer = raw.status, raw.headers, raw.body
                else:
                    status, response_headers, answer = await self._post(f"/3/device/{device_token}", headers, body)
            except (httpx.TransportError, OSError) as exc:
                # A GOAWAY may carry Apple's reason (e.g. BadCertificate): classify it like a response.
                said = getattr(exc, "reason", None)
                known = REASONS.get(said) if isinstance(said, str) else None
                if known is not None and known.outcome is Outcome.REFRESH_TOKEN and token is not None and not refreshed:
                    assert self.tokens is not None
                    await self.tokens.refresh(token)
                    refreshed = True
                    continue
                if known is None or known.outcome is Outcome.REFRESH_TOKEN:
                    known, said = CONNECTION_ERROR, type(exc).__name__
                return _result(0, said, None, known, latency=time.perf_counter() - started)
            reason: str | None = None
            timestamp: int | None = None
            if status != 200:
                try:
                    error = orjson.loads(answer) if answer else {}
                except orjson.JSONDecodeError:
                    error = {}
                reason = error.get("reason")
                timestamp = error.get("timestamp")
            classification = classify(status, reason)
            if classification.outcome is Outcome.REFRESH_TOKEN and token is not None and not refreshed:
                assert self.tokens is not None
                await self.tokens.refresh(token)
                refreshed = True
                continue
            if classification.outcome is Outcome.REFRESH_TOKEN:
                classification = Classification(Outcome.RETRYABLE, 1.0, "the provider token was refused twice")
            apns_id_answered = unique_id = None
            for name, value in response_headers:
                if name == "apns-id":
                    apns_id_answered = value
                elif name == "apns-unique-id":
                    unique_id = value
            return _result(
                status, reason, apns_id_answered, classification, timestamp=timestamp if isinstance(timestamp, int)
                else None, latency=time.perf_counter() - started, apns_unique_id=unique_id,
            )  # fmt: skip

    async def _post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) of one POST through httpx, for a transport other than ours.

        On our transport ``send`` calls its ``exchange`` instead: AsyncClient's per-request machinery (URL
        merging, Request and Response objects, cookies) was most of the CPU per notification, and
        ``exchange`` skips it while raising the same httpx errors.
        """
        response = await self._http.post(path, content=body, headers=headers)
        answered = [(name.lower(), value) for name, value in response.headers.items()]
        return response.status_code, answered, response.content

    async def aclose(self) -> None:
        await self._http.aclose()
