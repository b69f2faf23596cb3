"""kopf handlers: APNsCredential → sender Deployment, replicas and status; NotificationCampaign →
fan-out, queue settings and status.

Credentials are reconciled on every change and then every ``operator_interval_seconds``:
the key Secret is read (only its fingerprint leaves this process), the Deployment is applied
server-side, replicas follow the backlog, and the status says whether APNs takes the key
(the senders publish a refusal in Redis). A campaign is a daemon for as long as it is not
finished: it waits for its credential and its start time, fans out (resumably), then keeps
the senders' settings in step with the spec and the status in step with the store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes.client as k8s
import redis.asyncio as aioredis
from kubernetes.client.exceptions import ApiException
from sqlalchemy import Engine

from noti import campaigns
from noti.campaigns import CampaignError, CampaignSpec
from noti.operator.conditions import changed, conditions_with, now_text
from noti.operator.deployment import (
    InvalidKey,
    SenderImage,
    key_fingerprint,
    sender_deployment,
)
from noti.operator.phases import Action, counts, next_step
from noti.operator.scaling import Scaler
from noti.queue import Credential, campaign_settings
from noti.settings import Settings
from noti.store.db import make_engine

GROUP, VERSION = "noti.dev", "v1alpha1"
CREDENTIALS, CAMPAIGNS = "apnscredentials", "notificationcampaigns"
FIELD_MANAGER = "noti-operator"
SCALER_MANAGER = "noti-operator-scaler"  # owns spec.replicas alone
DIGEST_ANNOTATION = "noti.dev/applied-digest"  # of the Deployment the operator last applied
FINISHED_PHASES = ("Completed", "Failed")

log = logging.getLogger("noti.operator")


def credential_queue(spec: Mapping[str, Any]) -> Credential:
    return Credential(spec["bundleId"], spec.get("environment") or "production")


class Operator:
    """The operator's state (store, Redis, Kubernetes client, scalers) and its handlers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.image = SenderImage(
            settings.operator_sender_image, settings.operator_sender_image_pull_policy,
            settings.operator_sender_env_secret,
            tuple(n.strip() for n in settings.operator_sender_image_pull_secrets.split(",") if n.strip()),
        )  # fmt: skip
        self._engine: Engine | None = None
        self._redis: aioredis.Redis | None = None
        self._api: k8s.ApiClient | None = None
        self._scalers: dict[str, Scaler] = {}

    # lifecycle

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url, pool_size=self.settings.database_pool_size)
        return self._engine

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        return self._redis

    @property
    def api(self) -> k8s.ApiClient:
        if self._api is None:
            from kubernetes import config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = k8s.ApiClient()
        return self._api

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        if self._engine is not None:
            self._engine.dispose()
        if self._api is not None:
            self._api.close()

    def registry(self) -> kopf.OperatorRegistry:
        """Every handler, registered for ``kopf.run(registry=...)``."""
        registry = kopf.OperatorRegistry()
        interval = self.settings.operator_interval_seconds

        @kopf.on.startup(registry=registry)
        def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.peering.standalone = True  # one operator replica (the chart's Deployment uses Recreate)
            settings.persistence.finalizer = "noti.dev/operator"
            settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="noti.dev")
            settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
                prefix="noti.dev", key="last-handled-configuration"
            )
            settings.posting.level = logging.WARNING  # events for warnings and errors, not every handler run
            settings.watching.server_timeout = 300

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            # In a pod its ServiceAccount, elsewhere KUBECONFIG (or ~/.kube/config).
            return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

        @kopf.on.cleanup(registry=registry)
        async def cleanup(**_: Any) -> None:
            await self.close()

        # A failure (the database, Redis or the API away) is retried after ``retry`` seconds, not kopf's minute.
        retry = max(5.0, 2 * interval)
        kopf.on.resume(GROUP, VERSION, CREDENTIALS, registry=registry, backoff=retry)(self.reconcile_credential)
        kopf.on.create(GROUP, VERSION, CREDENTIALS, registry=registry, backoff=retry)(self.reconcile_credential)
        kopf.on.update(GROUP, VERSION, CREDENTIALS, registry=registry, backoff=retry)(self.reconcile_credential)
        kopf.timer(GROUP, VERSION, CREDENTIALS, interval=interval, initial_delay=interval, registry=registry)(
            self.reconcile_credential
        )
        kopf.daemon(
            GROUP, VERSION, CAMPAIGNS, registry=registry, cancellation_timeout=5.0, backoff=retry,
            when=lambda status, **_: status.get("phase") not in FINISHED_PHASES,
        )(self.run_campaign)  # fmt: skip
        kopf.on.delete(GROUP, VERSION, CAMPAIGNS, registry=registry, backoff=retry)(self.delete_campaign)
        return registry

    # credentials

    async def reconcile_credential(
        self, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
    ) -> None:
        """Apply the senders' Deployment, scale it to the backlog, and report in the status."""
        namespace, name = meta["namespace"], meta["name"]
        conditions = status.get("conditions")
        try:
            fingerprint = await asyncio.to_thread(self._read_fingerprint, namespace, spec["privateKeySecretRef"])
        except (InvalidKey, LookupError) as exc:
            reason = "KeyInvalid" if isinstance(exc, InvalidKey) else "SecretNotFound"
            patch.status["conditions"] = conditions_with(conditions, "Ready", False, reason, str(exc))
            patch.status["observedGeneration"] = meta.get("generation")
            return
        manifest = sender_deployment(body, fingerprint, self.image)
        kopf.append_owner_reference(manifest, owner=body)  # the Deployment goes when its credential goes
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
        manifest["metadata"].setdefault("annotations", {})[DIGEST_ANNOTATION] = digest
        # A read is cheap; the apply (a write) only happens when the Deployment is missing or differs.
        deployment = await asyncio.to_thread(self._read_deployment, namespace, manifest["metadata"]["name"])
        if deployment is None or (deployment["metadata"].get("annotations") or {}).get(DIGEST_ANNOTATION) != digest:
            deployment = await asyncio.to_thread(self._apply, manifest, FIELD_MANAGER)

        queue = credential_queue(spec)
        backlog = await self._backlog(queue)
        senders = spec.get("senders") or {}
        current = int((deployment.get("spec") or {}).get("replicas") or 0)
        scaler = self._scalers.setdefault(f"{namespace}/{name}", Scaler(self.settings.operator_scale_down_seconds))
        replicas = scaler.decide(
            current, backlog, self.settings.operator_backlog_per_sender,
            int(senders.get("minReplicas", 1)), int(senders.get("maxReplicas", 20)),
        )  # fmt: skip
        if replicas != current or "replicas" not in _managed_fields(deployment, SCALER_MANAGER):
            scale = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": replicas},
                     "metadata": {"name": manifest["metadata"]["name"], "namespace": namespace}}  # fmt: skip
            await asyncio.to_thread(self._apply, scale, SCALER_MANAGER)
            if replicas != current:
                log.info("%s/%s: %d sender(s) for a backlog of %d (was %d)", namespace, name, replicas, backlog,
                         current)  # fmt: skip

        refused: dict[bytes, bytes] = await self.redis.hgetall(queue.status)  # type: ignore[assignment]
        if refused.get(b"state") == b"CredentialFailed":
            reason = refused.get(b"reason", b"").decode() or "CredentialFailed"
            ready = conditions_with(conditions, "Ready", False, reason, f"APNs refused the credential: {reason}")
        else:
            ready = conditions_with(conditions, "Ready", True, "SendersDeployed", f"{replicas} sender(s)")
        wanted = {"keyFingerprint": fingerprint, "senderReplicas": replicas, "backlog": backlog, "conditions": ready,
                  "observedGeneration": meta.get("generation")}  # fmt: skip
        patch.status.update(changed(status, wanted))  # nothing changed: no write at all

    def _read_fingerprint(self, namespace: str, ref: Mapping[str, Any]) -> str:
        try:
            secret = k8s.CoreV1Api(self.api).read_namespaced_secret(ref["name"], namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(f"Secret {namespace}/{ref['name']} not found") from None
            raise
        key = ref.get("key") or "AuthKey.p8"
        data = (secret.data or {}).get(key)
        if data is None:
            raise LookupError(f"Secret {namespace}/{ref['name']} has no key {key!r}")
        return key_fingerprint(base64.b64decode(data))

    def _read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = k8s.AppsV1Api(self.api).read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(self.api.sanitize_for_serialization(found))

    def _apply(self, manifest: dict[str, Any], manager: str) -> dict[str, Any]:
        metadata = manifest["metadata"]
        result = k8s.AppsV1Api(self.api).patch_namespaced_deployment(
            metadata["name"], metadata["namespace"], manifest, field_manager=manager, force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip
        return dict(self.api.sanitize_for_serialization(result))

    async def _backlog(self, queue: Credential) -> int:
        """Notifications waiting for this credential's senders: in its streams (acked entries are
        deleted, so a stream's length is what is left) and in its retry set."""
        members: set[bytes] = await self.redis.smembers(queue.campaigns)  # type: ignore[assignment]
        names = [m.decode() for m in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(queue.transactional_stream)
            for campaign in names:
                pipe.xlen(queue.campaign_stream(campaign))
            pipe.zcard(queue.retries)
            return int(sum(await pipe.execute()))

    # campaigns

    async def run_campaign(
        self, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
    ) -> None:
        """One campaign from Pending to Completed (or Failed); resumes after an operator restart."""
        namespace, name = meta["namespace"], meta["name"]
        state: dict[str, Any] = {"conditions": list(status.get("conditions") or [])}
        written = dict(status)  # the status as stored: only what differs from it is patched
        started_at = status.get("startedAt")
        fanned_out = False
        while True:
            try:  # the live spec: suspend, rate and startAt may change while the campaign runs
                campaign = CampaignSpec.from_manifest(
                    {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(meta), "spec": dict(spec)}
                )
            except CampaignError as exc:
                await self._campaign_status(namespace, name, state, written, "Failed", "Invalid", str(exc))
                return
            credential = await asyncio.to_thread(self._credential, namespace, campaign.credential)
            progress = await campaigns.progress(self.engine, self.redis, campaign.name) if fanned_out else None
            step = next_step(
                credential=f"{namespace}/{campaign.credential}", credential_found=credential is not None,
                start_at=campaign.start_at, suspend=campaign.suspend, started=bool(started_at),
                fanned_out=fanned_out, progress=progress, now=datetime.now(UTC),
                interval=self.settings.operator_interval_seconds,
            )  # fmt: skip
            if progress is not None:
                state.update(counts(progress))
            if step.action is Action.FAN_OUT:
                started_at = state["startedAt"] = started_at or now_text()
            if step.action is Action.FINISH:
                state["completedAt"] = now_text()
            await self._campaign_status(namespace, name, state, written, step.phase, step.reason, step.message)
            if step.action is Action.FINISH:
                return
            if step.action is Action.FAN_OUT and credential is not None:
                result = await campaigns.fan_out(
                    self.engine, self.redis, credential_queue(credential["spec"]), campaign
                )
                log.info("%s/%s: %d notifications queued (%d new)", namespace, name, result.total, result.written)
                fanned_out = True
                continue
            if step.action is Action.FOLLOW:  # senders read the rate and the suspension from here
                await self.redis.hset(
                    campaign_settings(campaign.name),
                    mapping={"rate": campaign.rate_per_second, "suspend": int(campaign.suspend)},
                )
            await asyncio.sleep(step.wait)

    async def delete_campaign(self, spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> None:
        """A deleted campaign stops: its queue goes and its unsent records are closed as failed."""
        namespace, name = meta["namespace"], meta["name"]
        credential = await asyncio.to_thread(self._credential, namespace, (spec.get("credentialRef") or {})["name"])
        if credential is None:  # nothing can be queued for a credential that does not exist
            return
        closed = await campaigns.cancel(self.engine, self.redis, credential_queue(credential["spec"]),
                                        f"{namespace}/{name}")  # fmt: skip
        log.info("%s/%s deleted: %d unsent notifications closed", namespace, name, closed)

    def _credential(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, CREDENTIALS, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(found)  # type: ignore[call-overload]

    async def _campaign_status(
        self, namespace: str, name: str, state: dict[str, Any], written: dict[str, Any], phase: str, reason: str,
        message: str,
    ) -> None:  # fmt: skip
        """Set the phase and Ready condition in ``state``; patch what differs from ``written`` (if anything)."""
        state["conditions"] = conditions_with(state.get("conditions"), "Ready", phase != "Failed", reason, message)
        state["phase"] = phase
        difference = changed(written, {key: value for key, value in state.items() if value is not None})
        if not difference:
            return
        await asyncio.to_thread(
            k8s.CustomObjectsApi(self.api).patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, CAMPAIGNS, name, {"status": difference},
        )  # fmt: skip
        written.update(difference)


def _managed_fields(deployment: Mapping[str, Any], manager: str) -> str:
    """What ``manager`` owns of an object, as text (enough to ask whether it owns a field)."""
    entries = (deployment.get("metadata") or {}).get("managedFields") or []
    return " ".join(str(entry.get("fieldsV1")) for entry in entries if entry.get("manager") == manager)


def run(settings: Settings) -> None:
    """Run the operator until SIGTERM/SIGINT."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # kopf reports every timer and handler run at INFO, and aiohttp every liveness probe: keep
        # those for debugging; the operator's own lines say what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    operator = Operator(settings)
    namespaces = [n.strip() for n in settings.operator_namespaces.split(",") if n.strip()]
    liveness = f"http://0.0.0.0:{settings.operator_health_port}/healthz" if settings.operator_health_port else None
    kopf.run(
        registry=operator.registry(), standalone=True, clusterwide=not namespaces, namespaces=namespaces,
        liveness_endpoint=liveness,
    )  # fmt: skip
