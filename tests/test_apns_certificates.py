"""Certificate auth (.p12 and .pem) against the simulator over TLS HTTP/2: the topic is the certificate's."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from harness.apns import BUNDLE_ID, SimulatorProcess, start_simulator, stop_simulator
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.payload import NotificationContent
from noti.apns.reasons import Outcome
from noti.apns.simulator.server import self_signed_ca

TOKEN = "ab" * 32
PASSWORD = b"p12-password"


@dataclass(frozen=True)
class ProviderCertificates:
    ca: Path
    directory: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    def issue(self, bundle_id: str, name: str) -> tuple[Path, Path, Path]:
        """A provider certificate for ``bundle_id`` like Apple's (UID = bundle id): (.p12, cert .pem, key .pem)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.USER_ID, bundle_id),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Apple Push Services: {bundle_id}"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self.ca_key, hashes.SHA256())
        )
        p12 = self.directory / f"{name}.p12"
        p12.write_bytes(
            pkcs12.serialize_key_and_certificates(
                name.encode(), key, cert, None, serialization.BestAvailableEncryption(PASSWORD)
            )
        )
        cert_pem, key_pem = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return p12, cert_pem, key_pem


def _authority(directory: Path) -> ProviderCertificates:
    key, cert = self_signed_ca("Test Apple Worldwide Developer Relations CA", days=1)
    ca = directory / "client-ca.crt"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ProviderCertificates(ca, directory, key, cert)


@pytest.fixture(scope="module")
def certificates() -> Iterator[ProviderCertificates]:
    with tempfile.TemporaryDirectory(prefix="noti-apns-certs-") as directory:
        yield _authority(Path(directory))


@pytest.fixture(scope="module")
def certificate_simulator(certificates: ProviderCertificates) -> Iterator[SimulatorProcess]:
    simulator = start_simulator(certificates.directory, extra=("--client-ca", str(certificates.ca)))
    try:
        yield simulator
    finally:
        stop_simulator(simulator)


async def _send(
    simulator: SimulatorProcess, bundle_id: str = BUNDLE_ID, **tls: object
) -> tuple[int, str | None, Outcome]:
    client = APNsClient(
        bundle_id,
        endpoint=simulator.url,
        ssl_context=client_ssl_context(ca_file=simulator.ca_path, **tls),  # type: ignore[arg-type]
    )
    result = await client.send(TOKEN, NotificationContent(title="x"))
    await client.aclose()
    return result.status_code, result.reason, result.outcome


async def test_a_p12_provider_certificate_authenticates_without_a_token(
    certificates: ProviderCertificates, certificate_simulator: SimulatorProcess
) -> None:
    p12, _, _ = certificates.issue(BUNDLE_ID, "app")
    assert await _send(certificate_simulator, p12_file=p12, p12_password=PASSWORD) == (200, None, Outcome.SUCCESS)


async def test_a_pem_provider_certificate_authenticates_without_a_token(
    certificates: ProviderCertificates, certificate_simulator: SimulatorProcess
) -> None:
    _, cert, key = certificates.issue(BUNDLE_ID, "app-pem")
    assert await _send(certificate_simulator, cert_file=cert, key_file=key) == (200, None, Outcome.SUCCESS)


async def test_a_certificate_pushes_only_to_its_own_topic(
    certificates: ProviderCertificates, certificate_simulator: SimulatorProcess
) -> None:
    _, cert, key = certificates.issue("com.other.app", "other")
    assert await _send(certificate_simulator, cert_file=cert, key_file=key) == (
        400, "TopicDisallowed", Outcome.PERMANENT,
    )  # fmt: skip


async def test_neither_certificate_nor_token_is_a_credential_failure(certificate_simulator: SimulatorProcess) -> None:
    assert await _send(certificate_simulator) == (403, "MissingProviderToken", Outcome.CREDENTIAL)
