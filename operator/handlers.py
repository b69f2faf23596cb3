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
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes.client as k8s
import redis.asyncio as aioredis
from kubernetes.client.exceptions import ApiException
from sqlalchemy import Engine

from noti import campaigns, routes
from noti.apns.payload import InvalidNotification, NotificationContent, build_payload
from noti.campaigns import CampaignError, CampaignSpec
from noti.operator.channels import ChannelReconciler
from noti.operator.conditions import (
    Condition,
    changed,
    credential_conditions,
    now_text,
    route_condition,
    transitions,
    with_conditions,
)
from noti.operator.credential import CredentialSpec, SenderPodDefaults
from noti.operator.deployment import (
    InvalidKey,
    SenderImage,
    certificate_fingerprint,
    key_fingerprint,
    sender_deployment,
    sender_disruption_budget,
)
from noti.operator.leadership import LeaseSettings, lead, release
from noti.operator.phases import FINISHED, Action, Step, counts, failed, next_step
from noti.operator.scaling import Scaler
from noti.queue import StreamKeys, campaign_settings
from noti.routes import Claimed, Route, apple_identity, route_field
from noti.settings import OperatorSettings
from noti.store.db import Bounds, make_engine

GROUP, VERSION = "noti.dev", "v1alpha1"
CREDENTIALS, CAMPAIGNS = "apnscredentials", "notificationcampaigns"
FIELD_MANAGER = "noti-operator"
SCALER_MANAGER = "noti-operator-scaler"  # owns spec.replicas alone
DIGEST_ANNOTATION = "noti.dev/applied-digest"  # of the Deployment the operator last applied

log = logging.getLogger("noti.operator")


def stream_keys(namespace: str, name: str) -> StreamKeys:
    """The queues of the APNsCredential ``namespace/name``."""
    return StreamKeys(f"{namespace}/{name}")


class Operator:
    """The operator's state (store, Redis, Kubernetes client, scalers) and its handlers."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.image = SenderImage(
            settings.operator_sender_image, settings.operator_sender_image_pull_policy,
            settings.operator_sender_env_secret,
            tuple(n.strip() for n in settings.operator_sender_image_pull_secrets.split(",") if n.strip()),
        )  # fmt: skip
        self.pod_defaults = SenderPodDefaults.from_env(os.environ)  # the chart's senders.* values
        self._engine: Engine | None = None
        self._redis: aioredis.Redis | None = None
        self._api: k8s.ApiClient | None = None
        self._scalers: dict[str, Scaler] = {}
        self._credential_conditions: dict[str, list[dict[str, Any]]] = {}  # by uid: the last ones written
        self._budgets: dict[str, dict[str, Any]] = {}  # by uid: the disruption budget last applied
        self._reconciling: dict[str, asyncio.Lock] = {}  # by uid: held while a credential is reconciled or deleted
        self.channels = ChannelReconciler(self)  # LiveActivityChannels, and campaigns that broadcast to one

    # lifecycle

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(
                self.settings.database_url, pool_size=self.settings.database_pool_size, bounds=Bounds.of(self.settings)
            )
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
            settings.peering.standalone = True  # one leader acts at a time: a Lease (leadership.py), not kopf's peering
            settings.persistence.finalizer = "noti.dev/operator"
            settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="noti.dev")
            settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
                prefix="noti.dev", key="last-handled-configuration"
            )
            settings.posting.level = logging.WARNING  # events for warnings and errors, not every handler run
            # A credential's timer caught mid-reconcile by its deletion is not cancelled: kopf keeps the finalizer
            # until it returns and looks again after this many seconds (its default, a minute, outlasts a
            # ``kubectl delete`` even though the reconcile is over in a moment).
            settings.background.cancellation_polling = 1.0
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
        # Optional: a delete the operator missed (its finalizer dropped by hand) leaves the route to a credential
        # that is gone, which the next claimer of the app finds out and takes it over (_claim_route).
        kopf.on.delete(GROUP, VERSION, CREDENTIALS, registry=registry, backoff=retry, optional=True)(
            self.delete_credential
        )
        # A finished campaign's daemon is told to stop (its filter no longer matches) and returns at once;
        # the backoff lets it, instead of kopf cancelling it mid-patch with a warning.
        kopf.daemon(
            GROUP, VERSION, CAMPAIGNS, registry=registry, cancellation_backoff=2 * interval + 5,
            cancellation_timeout=5.0, backoff=retry,
            when=lambda status, **_: status.get("phase") not in FINISHED,
        )(self.run_campaign)  # fmt: skip
        kopf.on.delete(GROUP, VERSION, CAMPAIGNS, registry=registry, backoff=retry)(self.delete_campaign)
        self.channels.register(registry, retry)  # LiveActivityChannel (noti.operator.channels)
        return registry

    # credentials

    async def reconcile_credential(
        self, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
    ) -> None:
        """Apply the senders' Deployment, scale it to the backlog, and report in the status."""
        # One at a time per credential (its timer and its change handlers), and none once its deletion began:
        # a reconcile must not claim the route its delete handler lets go of.
        async with self._reconciling.setdefault(meta["uid"], asyncio.Lock()):
            if meta.get("deletionTimestamp"):  # kopf's view of a timer's body is live
                return
            await self._reconcile_credential(body, spec, status, meta, patch)

    async def _reconcile_credential(
        self, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch
    ) -> None:
        namespace, name = meta["namespace"], meta["name"]
        generation = meta.get("generation")  # before the spec is read: a timer's body is live
        try:
            fingerprint = await asyncio.to_thread(self._read_fingerprint, namespace, spec)
        except (InvalidKey, LookupError) as exc:
            reason = "KeyInvalid" if isinstance(exc, InvalidKey) else "SecretNotFound"
            problem = Condition("KeyValid", False, reason, str(exc))
            self._credential_status(body, status, patch, [problem, Condition("Ready", False, reason, str(exc))],
                                    {"observedGeneration": generation})  # fmt: skip
            return
        manifest = sender_deployment(body, fingerprint, self.image, self.pod_defaults)
        kopf.append_owner_reference(manifest, owner=body)  # the Deployment goes when its credential goes
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
        manifest["metadata"].setdefault("annotations", {})[DIGEST_ANNOTATION] = digest
        # A read is cheap; the apply (a write) only happens when the Deployment is missing or differs.
        deployment = await asyncio.to_thread(self._read_deployment, namespace, manifest["metadata"]["name"])
        if deployment is None or (deployment["metadata"].get("annotations") or {}).get(DIGEST_ANNOTATION) != digest:
            deployment = await asyncio.to_thread(self._apply, manifest, FIELD_MANAGER)

        budget = sender_disruption_budget(body, self.pod_defaults)
        if budget is not None and (self._budgets.get(body["metadata"]["uid"]) != budget):
            kopf.append_owner_reference(budget, owner=body)
            await asyncio.to_thread(self._apply_budget, budget)
            self._budgets[body["metadata"]["uid"]] = budget

        routed, route = await self._claim_route(namespace, name, spec, status, fingerprint)
        queue = stream_keys(namespace, name)
        backlog = await self._backlog(queue)
        pool = CredentialSpec.from_spec(spec).senders
        current = int((deployment.get("spec") or {}).get("replicas") or 0)
        running = int((deployment.get("status") or {}).get("availableReplicas") or 0)
        scaler = self._scalers.setdefault(
            f"{namespace}/{name}",
            Scaler(self.settings.operator_scale_down_seconds, self.settings.operator_sender_rate),
        )
        scaler.measure(int(await self.redis.get(queue.finished) or 0), running, backlog)
        replicas = scaler.decide(
            current, backlog, self.settings.operator_drain_seconds, pool.min_replicas, pool.max_replicas,
            pool.rate_per_second,
        )  # fmt: skip
        if replicas != current or "replicas" not in _managed_fields(deployment, SCALER_MANAGER):
            scale = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": replicas},
                     "metadata": {"name": manifest["metadata"]["name"], "namespace": namespace}}  # fmt: skip
            await asyncio.to_thread(self._apply, scale, SCALER_MANAGER)
            if replicas != current:
                message = f"{replicas} sender(s) for a backlog of {backlog} (was {current})"
                log.info("%s/%s: %s", namespace, name, message)
                kopf.event(body, type="Normal", reason="Scaled", message=message)

        refused: dict[bytes, bytes] = await self.redis.hgetall(queue.status)  # type: ignore[assignment]
        available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
        conditions = credential_conditions(
            refusal=refused.get(b"reason", b"").decode() or "CredentialFailed"
            if refused.get(b"state") == b"CredentialFailed" else None,
            replicas=replicas, available=available, certificate=bool(spec.get("certificateSecretRef")), routed=routed,
        )  # fmt: skip
        wanted = {"keyFingerprint": fingerprint, "senderReplicas": replicas, "availableSenders": available,
                  "backlog": backlog, "route": route, "observedGeneration": generation}  # fmt: skip
        self._credential_status(body, status, patch, conditions, wanted)

    async def _claim_route(
        self, namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], fingerprint: str
    ) -> tuple[Condition, str]:
        """Claim the route of the credential's app and environment (letting go of the one it had, when the spec
        moved it elsewhere), and say whether it serves them."""
        typed = CredentialSpec.from_spec(spec)
        credential = f"{namespace}/{name}"
        route = route_field(typed.bundle_id, typed.environment)
        before = status.get("route")
        if isinstance(before, str) and before != route:
            environment, _, app = before.partition(":")
            await routes.release(self.redis, app, environment, credential)
        identity = apple_identity(typed.team_id, typed.key_id, fingerprint if typed.certificate is not None else None)
        claim = await routes.claim(self.redis, typed.bundle_id, typed.environment, Route(credential, identity))
        if claim.outcome is Claimed.CONFLICT and await self._gone(claim.holder.credential):
            log.info("%s serves %s in %s no more (deleted): %s takes it", claim.holder.credential, typed.bundle_id,
                     typed.environment, credential)  # fmt: skip
            await routes.release(self.redis, typed.bundle_id, typed.environment, claim.holder.credential)
            claim = await routes.claim(self.redis, typed.bundle_id, typed.environment, Route(credential, identity))
        return route_condition(claim, typed.bundle_id, typed.environment), route

    async def _gone(self, credential: str) -> bool:
        """Whether the APNsCredential ``namespace/name`` surely no longer exists (a read that fails: it may)."""
        namespace, name = credential.split("/")
        try:
            return await asyncio.to_thread(self._credential, namespace, name) is None
        except ApiException:
            return False

    async def delete_credential(self, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any) -> None:
        """A deleted credential lets go of its route (only if it still holds it): a credential waiting for the
        same app and environment takes it at its next reconcile."""
        async with self._reconciling.setdefault(meta["uid"], asyncio.Lock()):  # after a reconcile under way
            await self._release_credential(spec, status, meta)
        self._reconciling.pop(meta["uid"], None)

    async def _release_credential(self, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta) -> None:
        credential = f"{meta['namespace']}/{meta['name']}"
        typed = CredentialSpec.from_spec(spec)
        claimed = {route_field(typed.bundle_id, typed.environment)}
        if isinstance(status.get("route"), str):
            claimed.add(status["route"])
        for route in claimed:
            environment, app = route.split(":", 1)
            if await routes.release(self.redis, app, environment, credential):
                log.info("%s deleted: it no longer serves %s in %s", credential, app, environment)
        self._scalers.pop(credential, None)
        self._credential_conditions.pop(meta.get("uid", ""), None)

    def _credential_status(
        self, body: kopf.Body, status: kopf.Status, patch: kopf.Patch, conditions: list[Condition],
        fields: dict[str, Any],
    ) -> None:  # fmt: skip
        """Patch what changed of the status (nothing changed: no write) and post an Event per transition."""
        uid = body["metadata"]["uid"]
        # What this process last wrote counts over the body: a timer and a change handler can both run on a
        # status that is one patch behind, and the same transition must be told once.
        current = self._credential_conditions.get(uid, status.get("conditions"))
        merged = with_conditions(current, conditions)
        for moved in transitions(current, merged):
            self._event(body, moved, warning=moved["status"] == "False")
        self._credential_conditions[uid] = merged
        patch.status.update(changed(status, {**fields, "conditions": merged}))

    def _event(self, body: kopf.Body, condition: Mapping[str, Any], *, warning: bool) -> None:
        meta = body["metadata"]
        message = f"{condition['type']}={condition['status']}: {condition.get('message') or condition['reason']}"
        level = logging.WARNING if warning else logging.INFO
        log.log(level, "%s %s/%s: %s", body["kind"], meta["namespace"], meta["name"], message)
        kopf.event(body, type="Warning" if warning else "Normal", reason=condition["reason"], message=message)

    def _read_fingerprint(self, namespace: str, spec: Mapping[str, Any]) -> str:
        typed = CredentialSpec.from_spec(spec)
        ref = typed.auth_secret
        try:
            secret = k8s.CoreV1Api(self.api).read_namespaced_secret(ref.name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(f"Secret {namespace}/{ref.name} not found") from None
            raise
        data = (secret.data or {}).get(ref.key)
        if data is None:
            raise LookupError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        if typed.certificate is not None:
            return certificate_fingerprint(base64.b64decode(data))
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

    def _apply_budget(self, manifest: dict[str, Any]) -> None:
        metadata = manifest["metadata"]
        k8s.PolicyV1Api(self.api).patch_namespaced_pod_disruption_budget(
            metadata["name"], metadata["namespace"], manifest, field_manager=FIELD_MANAGER, force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip

    async def _backlog(self, queue: StreamKeys) -> int:
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
        self, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:  # fmt: skip
        """One campaign from Pending to Completed (or Failed); resumes after an operator restart."""
        if spec.get("broadcast"):  # one broadcast to a channel, not a fan-out to devices
            await self.channels.run_broadcast(body, spec, status, meta, stopped)
            return
        namespace, name = meta["namespace"], meta["name"]
        state: dict[str, Any] = {"conditions": list(status.get("conditions") or [])}
        written = dict(status)  # the status as stored: only what differs from it is patched
        started_at = status.get("startedAt")
        fanning_out: asyncio.Task[campaigns.FanOutResult] | None = None
        fanned_out = False
        try:
            while not stopped:
                # The generation this look acts on, read with the spec: the body is live, and a status that said
                # a newer generation observed would claim settings (the rate, the suspension) not yet written.
                generation = meta.get("generation")
                try:  # the live spec: suspend, rate and startAt may change while the campaign runs
                    campaign = CampaignSpec.from_manifest(
                        {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(meta),
                         "spec": dict(spec)}
                    )  # fmt: skip
                except CampaignError as exc:
                    invalid = failed("Invalid", str(exc))
                    await self._campaign_status(body, state, written, invalid, generation=generation)
                    return
                problem = None if started_at else notification_problem(campaign.content)
                if problem is not None:  # refused before anything is written or queued
                    refused = failed("InvalidNotification", problem)
                    await self._campaign_status(body, state, written, refused, generation=generation)
                    return
                if fanning_out is not None and fanning_out.done():
                    result = fanning_out.result()  # a failed fan-out raises here: kopf retries the daemon
                    log.info("%s/%s: %d notifications queued (%d new)", namespace, name, result.total, result.written)
                    fanning_out, fanned_out = None, True
                credential = await asyncio.to_thread(self._credential, namespace, campaign.credential)
                # Counted from the start: the total once the audience is counted, sent while the fan-out goes on.
                progress = await campaigns.progress(self.engine, self.redis, campaign.name) if started_at else None
                step = next_step(
                    credential=f"{namespace}/{campaign.credential}", credential_found=credential is not None,
                    start_at=campaign.start_at, suspend=campaign.suspend, started=bool(started_at),
                    fanned_out=fanned_out, progress=progress if fanned_out else None, now=datetime.now(UTC),
                    interval=self.settings.operator_interval_seconds, phase=written.get("phase"),
                    conflict=bundle_conflict(credential),
                )  # fmt: skip
                if progress is not None:
                    state.update(counts(progress))
                if step.action is Action.FAN_OUT:
                    started_at = state["startedAt"] = started_at or now_text()
                if step.action is Action.FINISH:
                    state["completedAt"] = now_text()
                if step.action in (Action.FAN_OUT, Action.FOLLOW):  # senders read the rate and suspension here,
                    await self.redis.hset(  # before the status reports this generation observed
                        campaign_settings(campaign.name),
                        mapping={"rate": campaign.rate_per_second, "suspend": int(campaign.suspend)},
                    )
                await self._campaign_status(body, state, written, step, generation=generation)
                if step.action is Action.FINISH:
                    return
                if step.action is Action.FAN_OUT and credential is not None and fanning_out is None:
                    fanning_out = asyncio.create_task(
                        campaigns.fan_out(
                            self.engine,
                            self.redis,
                            stream_keys(namespace, campaign.credential),
                            campaign,
                            app=CredentialSpec.from_spec(credential["spec"]).bundle_id,
                        ),
                        name=f"fan-out {namespace}/{name}",
                    )
                await stopped.wait(step.wait or self.settings.operator_interval_seconds)
        finally:
            if fanning_out is not None:
                fanning_out.cancel()  # resumable: the next run goes on from the saved cursor
                await asyncio.gather(fanning_out, return_exceptions=True)

    async def delete_campaign(self, meta: kopf.Meta, **_: Any) -> None:
        """A deleted campaign stops: its queue goes and its unsent records are closed as failed, whether or not
        its credential still exists (nothing of it may be delivered after ``kubectl delete`` returned)."""
        namespace, name = meta["namespace"], meta["name"]
        closed = await campaigns.cancel(self.engine, self.redis, f"{namespace}/{name}")
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
        self, body: kopf.Body, state: dict[str, Any], written: dict[str, Any], step: Step,
        generation: int | None = None,
    ) -> None:  # fmt: skip
        """Set the phase and conditions in ``state``, patch what differs from ``written`` (if anything), and post
        an Event for the new phase and for each condition that moved. ``generation`` is the one acted on (by
        default the body's)."""
        merged = with_conditions(state.get("conditions"), step.conditions)
        moved = transitions(state.get("conditions"), merged)
        state["conditions"], state["phase"], state["message"] = merged, step.phase, step.message
        state["observedGeneration"] = generation if generation is not None else body["metadata"].get("generation")
        difference = changed(written, {key: value for key, value in state.items() if value is not None})
        if not difference:
            return
        meta = body["metadata"]
        await asyncio.to_thread(
            k8s.CustomObjectsApi(self.api).patch_namespaced_custom_object_status,
            GROUP, VERSION, meta["namespace"], CAMPAIGNS, meta["name"], {"status": difference},
        )  # fmt: skip
        if "phase" in difference:
            self._event(body, {"type": "Phase", "status": step.phase, "reason": step.reason, "message": step.message},
                        warning=step.warning)  # fmt: skip
        for moved_condition in moved:
            if moved_condition["type"] not in ("Complete", "Failed"):  # the phase's Event already says so
                waiting = moved_condition["type"] == "CredentialFound" and moved_condition["status"] == "False"
                self._event(body, moved_condition, warning=waiting)
        written.update(difference)


def bundle_conflict(credential: Mapping[str, Any] | None) -> str | None:
    """Why a credential may not send for its app (another credential serves it), from its status; or None."""
    conditions = ((credential or {}).get("status") or {}).get("conditions") or []
    routed = next((c for c in conditions if c.get("type") == "Routed"), None)
    if routed is not None and routed.get("reason") == "BundleConflict":
        return str(routed.get("message") or "another credential serves its app")
    return None


def notification_problem(content: Mapping[str, Any]) -> str | None:
    """Why a campaign's notification could never be sent (as the gateway would refuse it), or None."""
    try:
        build_payload(NotificationContent.from_dict(dict(content)))
    except InvalidNotification as exc:
        return f"spec.notification: {exc}"
    return None


def _managed_fields(deployment: Mapping[str, Any], manager: str) -> str:
    """What ``manager`` owns of an object, as text (enough to ask whether it owns a field)."""
    entries = (deployment.get("metadata") or {}).get("managedFields") or []
    return " ".join(str(entry.get("fieldsV1")) for entry in entries if entry.get("manager") == manager)


def run(settings: OperatorSettings) -> None:
    """Run the operator until SIGTERM/SIGINT."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # kopf reports every timer and handler run at INFO, and aiohttp every liveness probe: keep
        # those for debugging; the operator's own lines say what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    operator = Operator(settings)
    lease: LeaseSettings | None = None
    if settings.operator_leader_election:
        logging.getLogger("leaderelection").setLevel(logging.WARNING)  # a line per renewal otherwise
        operator.api  # noqa: B018 - loads the kubeconfig (or the in-cluster config) the Lease client uses
        duration = settings.operator_lease_seconds
        renew = max(2, duration * 2 // 3)
        lease = LeaseSettings(settings.operator_lease_name, settings.operator_lease_namespace, duration, renew,
                              max(1, renew // 3))  # fmt: skip
        lead(lease)
    namespaces = [n.strip() for n in settings.operator_namespaces.split(",") if n.strip()]
    liveness = f"http://0.0.0.0:{settings.operator_health_port}/healthz" if settings.operator_health_port else None
    try:
        kopf.run(
            registry=operator.registry(), standalone=True, clusterwide=not namespaces, namespaces=namespaces,
            liveness_endpoint=liveness,
        )  # fmt: skip
    finally:
        if lease is not None:
            release(lease)
