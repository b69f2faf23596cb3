"""Provider tokens the APNs conformance tests hand a client: stale first, fixed, signed in DER form."""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from noti.apns.tokens import ProviderTokens


class StaleFirstTokens(ProviderTokens):
    """Hands out a token issued 3700 s ago (Apple's limit is an hour) until APNs refuses it."""

    def __init__(self, key: EllipticCurvePrivateKey, key_id: str, team_id: str) -> None:
        self.offset = -3700.0
        super().__init__(key, key_id, team_id, clock=lambda: time.time() + self.offset)

    async def refresh(self, rejected: str) -> str:
        self.offset = 0.0
        return await super().refresh(rejected)


class FixedTokens(ProviderTokens):
    """Always ``token`` (change it between sends to try another)."""

    def __init__(self, key: EllipticCurvePrivateKey, key_id: str, team_id: str, token: str) -> None:
        super().__init__(key, key_id, team_id)
        self.token = token

    async def current(self) -> str:
        return self.token


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def der_signed_token(key: EllipticCurvePrivateKey, key_id: str, team_id: str, issued_at: int) -> str:
    """An ES256 provider token whose signature is ASN.1 DER, as Java's and OpenSSL's signers write it."""
    header = b64url(json.dumps({"alg": "ES256", "kid": key_id}).encode())
    claims = b64url(json.dumps({"iss": team_id, "iat": issued_at}).encode())
    signature = key.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"{header}.{claims}.{b64url(signature)}"
