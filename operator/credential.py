"""An APNsCredential's spec, typed, with the CRD's defaults, and the sender pod defaults the chart sets.

The defaults come from the CRD itself (``crds/apnscredentials.noti.dev.yaml``), so that the
operator and ``kubectl explain`` can never disagree. Where a credential leaves a pod field of
its senders unset (resources, scheduling, tuning), the chart-wide default applies
(``NOTI_OPERATOR_SENDER_*``, JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from noti.queue import Environment

CRD_FILE = "apnscredentials.noti.dev.yaml"


@cache
def _spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(resources.files("noti.crds").joinpath(CRD_FILE).read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def crd_default(*path: str) -> Any:
    """The CRD's default at ``spec.<path>`` (e.g. ``crd_default("senders", "maxReplicas")``)."""
    node = _spec_schema()
    for name in path:
        node = node["properties"][name]
    return node["default"]


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class CertificateRef:
    """Certificate auth: the Secret with the .p12 file, and the key of its password in the same Secret."""

    name: str
    key: str
    password_key: str | None = None


@dataclass(frozen=True, slots=True)
class Tuning:
    connections: int | None = None
    concurrency: int | None = None
    batch_size: int | None = None


@dataclass(frozen=True, slots=True)
class SenderPodDefaults:
    """What the chart sets for every sender pod (``NOTI_OPERATOR_SENDER_*``); a credential overrides it."""

    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] = field(default_factory=dict)
    topology_spread_constraints: list[dict[str, Any]] = field(default_factory=list)
    priority_class_name: str = ""
    pod_annotations: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    disruption_budget: dict[str, Any] = field(default_factory=lambda: {"enabled": True, "maxUnavailable": 1})
    tuning: Tuning = field(default_factory=Tuning)

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> SenderPodDefaults:
        """From the operator's environment; unset variables keep the built-in defaults, bad JSON is an error."""

        def read(name: str) -> Any:
            raw = values.get(f"NOTI_OPERATOR_SENDER_{name}")
            if raw is None or raw == "":
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise ValueError(f"NOTI_OPERATOR_SENDER_{name} is not JSON") from None

        built_in = cls()
        tuning = read("TUNING") or {}
        return cls(
            resources=read("RESOURCES") or built_in.resources,
            node_selector=read("NODE_SELECTOR") or {},
            tolerations=read("TOLERATIONS") or [],
            affinity=read("AFFINITY") or {},
            topology_spread_constraints=read("TOPOLOGY_SPREAD_CONSTRAINTS") or [],
            priority_class_name=values.get("NOTI_OPERATOR_SENDER_PRIORITY_CLASS_NAME", ""),
            pod_annotations=read("POD_ANNOTATIONS") or {},
            pod_labels=read("POD_LABELS") or {},
            disruption_budget=read("POD_DISRUPTION_BUDGET") or built_in.disruption_budget,
            tuning=Tuning(tuning.get("connections"), tuning.get("concurrency"), tuning.get("batchSize")),
        )


@dataclass(frozen=True, slots=True)
class SenderPool:
    """``spec.senders``: the pool's size, its shared rate, and its pods' resources, scheduling and tuning."""

    min_replicas: int
    max_replicas: int
    rate_per_second: int
    resources: dict[str, Any] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    topology_spread_constraints: list[dict[str, Any]] | None = None
    priority_class_name: str | None = None
    disruption_budget: dict[str, Any] | None = None
    tuning: Tuning = field(default_factory=Tuning)


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    bundle_id: str
    environment: Environment
    senders: SenderPool
    team_id: str = ""  # token auth: the Apple team, the key id and the key
    key_id: str = ""
    private_key: SecretKeyRef | None = None
    certificate: CertificateRef | None = None  # certificate auth instead (the CRD allows exactly one)
    endpoint: str = ""
    channels_endpoint: str = ""  # channel management (Apple: its own host and port)
    proxy: str = ""
    ca: SecretKeyRef | None = None

    @property
    def auth_secret(self) -> SecretKeyRef:
        """The Secret and key of the file the senders authenticate with (the .p8 key, or the .p12)."""
        if self.certificate is not None:
            return SecretKeyRef(self.certificate.name, self.certificate.key)
        assert self.private_key is not None, "the CRD requires privateKeySecretRef or certificateSecretRef"
        return self.private_key

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> CredentialSpec:
        """The spec as the apiserver stored it (defaults filled in), or as written: the CRD's defaults apply."""
        senders = {**crd_default("senders"), **(spec.get("senders") or {})}
        tuning = senders.get("tuning") or {}
        key_ref = spec.get("privateKeySecretRef")
        cert_ref = spec.get("certificateSecretRef")
        ca_ref = spec.get("caSecretRef")
        return cls(
            team_id=spec.get("teamId") or "",
            key_id=spec.get("keyId") or "",
            bundle_id=spec["bundleId"],
            environment=spec.get("environment") or crd_default("environment"),
            private_key=SecretKeyRef(key_ref["name"], key_ref.get("key") or crd_default("privateKeySecretRef", "key"))
            if key_ref
            else None,
            certificate=CertificateRef(
                cert_ref["name"],
                cert_ref.get("key") or crd_default("certificateSecretRef", "key"),
                cert_ref.get("passwordKey"),
            )
            if cert_ref
            else None,
            senders=SenderPool(
                min_replicas=int(senders.get("minReplicas", crd_default("senders", "minReplicas"))),
                max_replicas=int(senders.get("maxReplicas", crd_default("senders", "maxReplicas"))),
                rate_per_second=int(senders.get("ratePerSecond", crd_default("senders", "ratePerSecond"))),
                resources=senders.get("resources"),
                node_selector=senders.get("nodeSelector"),
                tolerations=senders.get("tolerations"),
                affinity=senders.get("affinity"),
                topology_spread_constraints=senders.get("topologySpreadConstraints"),
                priority_class_name=senders.get("priorityClassName"),
                disruption_budget=senders.get("podDisruptionBudget"),
                tuning=Tuning(tuning.get("connections"), tuning.get("concurrency"), tuning.get("batchSize")),
            ),
            endpoint=spec.get("endpoint") or "",
            channels_endpoint=spec.get("channelsEndpoint") or "",
            proxy=spec.get("proxy") or "",
            ca=SecretKeyRef(ca_ref["name"], ca_ref.get("key") or crd_default("caSecretRef", "key")) if ca_ref else None,
        )
