"""The sender Deployment of an APNsCredential, and the fingerprint of its signing key.

The credential reaches its senders through the pod spec only: the key Secret (or, for
certificate auth, the .p12 Secret, its password as an env reference to the same Secret) as a
read-only volume, team id, key id, bundle id, environment and proxy as env. Database and Redis
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
from noti.operator.credential import CredentialSpec, SenderPodDefaults

KEY_DIR = "/var/run/noti/apns"
CERT_DIR = "/var/run/noti/apns-cert"
CA_DIR = "/var/run/noti/ca"
HEALTH_PORT = 8081
FINGERPRINT_ANNOTATION = "noti.dev/key-fingerprint"
CREDENTIAL_LABEL = "noti.dev/credential"
DEFAULT_RESOURCES = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


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


@dataclass(frozen=True, slots=True)
class SenderImage:
    image: str
    pull_policy: str = "IfNotPresent"
    env_secret: str | None = None  # Secret with NOTI_DATABASE_URL and NOTI_REDIS_URL
    pull_secrets: tuple[str, ...] = ()  # imagePullSecrets of the sender pods


def deployment_name(credential: str) -> str:
    return f"{credential}-sender"[:63].rstrip("-")


def pool_selector(credential: str) -> dict[str, str]:
    """The labels that select one credential's sender pods (fixed: a Deployment's selector cannot change)."""
    return {CREDENTIAL_LABEL: credential, "app.kubernetes.io/component": "sender"}


def sender_deployment(
    credential: Mapping[str, Any], fingerprint: str, image: SenderImage, defaults: SenderPodDefaults | None = None
) -> dict[str, Any]:
    """The Deployment manifest of a credential's senders, without ``replicas`` (the scaler owns that)."""
    defaults = defaults or SenderPodDefaults()
    metadata = credential["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    spec = CredentialSpec.from_spec(credential["spec"])
    pool = spec.senders
    labels = {
        **defaults.pod_labels,
        "app.kubernetes.io/name": "noti",
        "app.kubernetes.io/component": "sender",
        "app.kubernetes.io/managed-by": "noti-operator",
        CREDENTIAL_LABEL: name,
    }
    tuning = {
        "NOTI_SENDER_CONNECTIONS": pool.tuning.connections or defaults.tuning.connections,
        "NOTI_SENDER_CONCURRENCY": pool.tuning.concurrency or defaults.tuning.concurrency,
        "NOTI_SENDER_BATCH_SIZE": pool.tuning.batch_size or defaults.tuning.batch_size,
    }
    auth = spec.auth_secret
    secret_env: list[dict[str, Any]] = []  # values the pod reads from a Secret, never written into the spec
    if spec.certificate is not None:
        directory = CERT_DIR
        credentials = {"NOTI_APNS_CERT_FILE": f"{CERT_DIR}/{auth.key}"}
        if spec.certificate.password_key:
            secret_env.append({
                "name": "NOTI_APNS_CERT_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": auth.name, "key": spec.certificate.password_key}},
            })  # fmt: skip
    else:
        directory = KEY_DIR
        credentials = {"NOTI_APNS_TEAM_ID": spec.team_id, "NOTI_APNS_KEY_ID": spec.key_id,
                       "NOTI_APNS_KEY_FILE": f"{KEY_DIR}/{auth.key}"}  # fmt: skip
    env = {
        "NOTI_CREDENTIAL": f"{namespace}/{name}",
        **credentials,
        "NOTI_APNS_BUNDLE_ID": spec.bundle_id,
        "NOTI_APNS_ENVIRONMENT": spec.environment,
        "NOTI_SENDER_RATE_PER_SECOND": str(pool.rate_per_second),
        "NOTI_SENDER_HEALTH_PORT": str(HEALTH_PORT),
        **({"NOTI_APNS_ENDPOINT": spec.endpoint} if spec.endpoint else {}),
        **({"NOTI_APNS_CHANNELS_ENDPOINT": spec.channels_endpoint} if spec.channels_endpoint else {}),
        **({"NOTI_APNS_PROXY": spec.proxy} if spec.proxy else {}),
        **{key: str(value) for key, value in tuning.items() if value},
    }
    volumes: list[dict[str, Any]] = [
        {
            "name": "apns-key",
            "secret": {
                "secretName": auth.name,
                "items": [{"key": auth.key, "path": auth.key}],
                "defaultMode": 0o440,
            },
        }
    ]
    volumes.append({"name": "tmp", "emptyDir": {}})  # the root filesystem is read-only
    mounts: list[dict[str, Any]] = [
        {"name": "apns-key", "mountPath": directory, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.ca is not None:
        env["NOTI_APNS_CA_FILE"] = f"{CA_DIR}/{spec.ca.key}"
        volumes.append(
            {"name": "apns-ca", "secret": {"secretName": spec.ca.name, "items": [{"key": spec.ca.key,
                                                                                  "path": spec.ca.key}]}}
        )  # fmt: skip
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
        "resources": pool.resources or defaults.resources or DEFAULT_RESOURCES,
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
    selector = pool_selector(name)
    spread = [
        {**constraint, "labelSelector": constraint.get("labelSelector") or {"matchLabels": selector}}
        for constraint in (pool.topology_spread_constraints or defaults.topology_spread_constraints)
    ]
    scheduling = {
        "nodeSelector": pool.node_selector or defaults.node_selector,
        "tolerations": pool.tolerations or defaults.tolerations,
        "affinity": pool.affinity or defaults.affinity,
        "topologySpreadConstraints": spread,
        "priorityClassName": pool.priority_class_name or defaults.priority_class_name,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(name), "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**labels, "app.kubernetes.io/version": __version__},
                    "annotations": {
                        **defaults.pod_annotations,
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
                    **{key: value for key, value in scheduling.items() if value},
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def sender_disruption_budget(
    credential: Mapping[str, Any], defaults: SenderPodDefaults | None = None
) -> dict[str, Any] | None:
    """A credential's PodDisruptionBudget (at most ``maxUnavailable`` senders drained at once), or None if off.

    With one sender, ``maxUnavailable: 1`` lets a drain evict it: the budget never blocks a node drain.
    """
    defaults = defaults or SenderPodDefaults()
    metadata = credential["metadata"]
    pool = CredentialSpec.from_spec(credential["spec"]).senders
    budget = {**defaults.disruption_budget, **(pool.disruption_budget or {})}
    if not budget.get("enabled", True):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": deployment_name(metadata["name"]), "namespace": metadata["namespace"],
                     "labels": {"app.kubernetes.io/name": "noti", "app.kubernetes.io/component": "sender",
                                "app.kubernetes.io/managed-by": "noti-operator", CREDENTIAL_LABEL: metadata["name"]}},
        "spec": {"maxUnavailable": budget.get("maxUnavailable", 1),
                 "selector": {"matchLabels": pool_selector(metadata["name"])}},
    }  # fmt: skip
