"""The sender Deployment of an APNsCredential, and the fingerprint of its signing key.

The credential reaches its senders through the pod spec only: the key Secret (or, for
certificate auth, the .p12 Secret, its password as an env reference to the same Secret)
as a read-only volume, team id, key id, bundle id, environment and proxy as env. Database and Redis
URLs come from a Secret the operator is told about (``NOTI_OPERATOR_SENDER_ENV_SECRET``).
The pod template carries the key's fingerprint, so a changed key rolls the senders.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from noti import __version__

KEY_DIR = "/var/run/noti/apns"
CERT_DIR = "/var/run/noti/apns-cert"
CA_DIR = "/var/run/noti/ca"
HEALTH_PORT = 8081
FINGERPRINT_ANNOTATION = "noti.dev/key-fingerprint"
CREDENTIAL_LABEL = "noti.dev/credential"


class InvalidKey(ValueError):
    """The Secret does not hold a usable APNs signing key; the message never quotes it."""


def key_fingerprint(pem: bytes) -> str:
    """``SHA256:<base64>`` of the public half of an APNs .p8 key (ES256, P-256), like ssh shows keys.

    Raises InvalidKey saying what is wrong, without any of the key's bytes.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidKey("the key is not an unencrypted PEM (PKCS#8) private key, as Apple's .p8 files are") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidKey("the key is not an ES256 (P-256) key, as APNs signing keys are")
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(public).digest()).decode().rstrip("=")


def certificate_fingerprint(p12: bytes) -> str:
    """``SHA256:<base64>`` of a .p12 certificate file as stored: a new certificate rolls the senders."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(p12).digest()).decode().rstrip("=")


def auth_secret_ref(spec: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The Secret reference the credential signs with, and the Secret key that holds the file."""
    if spec.get("certificateSecretRef"):
        ref = spec["certificateSecretRef"]
        return ref, ref.get("key") or "apns.p12"
    ref = spec["privateKeySecretRef"]
    return ref, ref.get("key") or "AuthKey.p8"


@dataclass(frozen=True, slots=True)
class SenderImage:
    image: str
    pull_policy: str = "IfNotPresent"
    env_secret: str | None = None  # Secret with NOTI_DATABASE_URL and NOTI_REDIS_URL
    pull_secrets: tuple[str, ...] = ()  # imagePullSecrets of the sender pods


def deployment_name(credential: str) -> str:
    return f"{credential}-sender"[:63].rstrip("-")


def sender_deployment(
    credential: Mapping[str, Any], fingerprint: str, image: SenderImage, extra_env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The Deployment manifest of a credential's senders, without ``replicas`` (the scaler owns that)."""
    metadata, spec = credential["metadata"], credential["spec"]
    name, namespace = metadata["name"], metadata["namespace"]
    senders = spec.get("senders") or {}
    labels = {
        "app.kubernetes.io/name": "noti",
        "app.kubernetes.io/component": "sender",
        "app.kubernetes.io/managed-by": "noti-operator",
        CREDENTIAL_LABEL: name,
    }
    env: dict[str, str] = {"NOTI_CREDENTIAL": f"{namespace}/{name}"}
    secret_env: list[dict[str, Any]] = []  # values the pod reads from a Secret, never written into the spec
    cert_ref = spec.get("certificateSecretRef")
    if cert_ref:
        secret_ref, directory, file_name = cert_ref, CERT_DIR, cert_ref.get("key") or "apns.p12"
        env["NOTI_APNS_CERT_FILE"] = f"{CERT_DIR}/{file_name}"
        if cert_ref.get("passwordKey"):
            secret_env.append({
                "name": "NOTI_APNS_CERT_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": cert_ref["name"], "key": cert_ref["passwordKey"]}},
            })  # fmt: skip
    else:
        secret_ref, directory = spec["privateKeySecretRef"], KEY_DIR
        file_name = secret_ref.get("key") or "AuthKey.p8"
        env.update({"NOTI_APNS_TEAM_ID": spec["teamId"], "NOTI_APNS_KEY_ID": spec["keyId"],
                    "NOTI_APNS_KEY_FILE": f"{KEY_DIR}/{file_name}"})  # fmt: skip
    env.update({
        "NOTI_APNS_BUNDLE_ID": spec["bundleId"],
        "NOTI_APNS_ENVIRONMENT": spec.get("environment") or "production",
        "NOTI_SENDER_RATE_PER_SECOND": str(senders.get("ratePerSecond", 0)),
        "NOTI_SENDER_HEALTH_PORT": str(HEALTH_PORT),
        **({"NOTI_APNS_ENDPOINT": spec["endpoint"]} if spec.get("endpoint") else {}),
        **({"NOTI_APNS_PROXY": spec["proxy"]} if spec.get("proxy") else {}),
        **dict(extra_env or {}),
    })  # fmt: skip
    volumes: list[dict[str, Any]] = [
        {
            "name": "apns-key",
            "secret": {
                "secretName": secret_ref["name"],
                "items": [{"key": file_name, "path": file_name}],
                "defaultMode": 0o440,
            },
        }
    ]
    volumes.append({"name": "tmp", "emptyDir": {}})  # the root filesystem is read-only
    mounts: list[dict[str, Any]] = [
        {"name": "apns-key", "mountPath": directory, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.get("caSecretRef"):
        ca_ref = spec["caSecretRef"]
        ca_name = ca_ref.get("key") or "ca.crt"
        env["NOTI_APNS_CA_FILE"] = f"{CA_DIR}/{ca_name}"
        volumes.append(
            {"name": "apns-ca", "secret": {"secretName": ca_ref["name"], "items": [{"key": ca_name, "path": ca_name}]}}
        )
        mounts.append({"name": "apns-ca", "mountPath": CA_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": "sender",
        "image": image.image,
        "imagePullPolicy": image.pull_policy,
        "args": ["sender"],
        "env": [{"name": key, "value": value} for key, value in env.items()] + secret_env,
        "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
        # Alive while its read loop turns; ready while APNs takes its credential and Redis answers.
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "health"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}, "periodSeconds": 5},
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if image.env_secret:
        container["envFrom"] = [{"secretRef": {"name": image.env_secret}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(name), "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {CREDENTIAL_LABEL: name, "app.kubernetes.io/component": "sender"}},
            "template": {
                "metadata": {
                    "labels": {**labels, "app.kubernetes.io/version": __version__},
                    "annotations": {
                        FINGERPRINT_ANNOTATION: fingerprint,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HEALTH_PORT),
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,  # senders need no Kubernetes rights
                    # Service links would put e.g. NOTI_GATEWAY_PORT=tcp://... into the env, which settings reject.
                    "enableServiceLinks": False,
                    # fsGroup lets uid 10001 read the key (Secret files are root's, group-readable with it).
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **({"imagePullSecrets": [{"name": n} for n in image.pull_secrets]} if image.pull_secrets else {}),
                    "terminationGracePeriodSeconds": 30,  # the sender drains within 25 s of SIGTERM
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
