"""LiveActivityChannel → a broadcast channel at APNs, made and deleted with its credential's key.

A new resource gets a channel through Apple's channel management API (with the credential's
token, shared through Redis like the senders' one), its id in ``status.channelId`` and a
``Ready`` condition; it is kept in the store so the gateway lists it. Deleting the resource
deletes the channel (the operator's finalizer holds it until then). A deletion never hangs on
a channel that cannot be deleted: when the credential, its key or APNs' acceptance is gone,
the channel is left at APNs, a Warning Event says so, and the resource goes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import kopf
import kubernetes.client as k8s
import orjson
from kubernetes.client.exceptions import ApiException

from noti.apns.channels import ChannelAnswer, ChannelClient
from noti.apns.tokens import CredentialKeyError, ProviderTokens, load_signing_key
from noti.operator.conditions import Condition, now_text, transitions, with_conditions
from noti.operator.credential import CredentialSpec
from noti.operator.phases import Action, Step, failed
from noti.store import channels as store

if TYPE_CHECKING:
    from noti.operator.handlers import Operator

GROUP, VERSION, CHANNELS, CREDENTIALS = "noti.dev", "v1alpha1", "liveactivitychannels", "apnscredentials"
GIVE_UP_AFTER = 5  # failed deletions at APNs (busy, unreachable) before the channel is left there
log = logging.getLogger("noti.operator")


class Unusable(Exception):
    """The credential cannot make channels (missing, no key, certificate auth); the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """What a channel is made with: the credential's app, environment, key and endpoints."""

    spec: CredentialSpec
    key_pem: bytes
    ca_pem: bytes | None


def broadcast_payload(broadcast: Mapping[str, Any]) -> dict[str, Any]:
    """The Live Activity payload of a campaign's ``spec.broadcast`` (pure)."""
    aps: dict[str, Any] = {
        "event": broadcast.get("event", "update"),
        "timestamp": int(time.time()),
        "content-state": dict(broadcast.get("contentState") or {}),
    }
    for field, key in (("staleDate", "stale-date"), ("dismissalDate", "dismissal-date"),
                       ("relevanceScore", "relevance-score")):  # fmt: skip
        if broadcast.get(field) is not None:
            aps[key] = broadcast[field]
    alert = {k: v for k, v in (broadcast.get("alert") or {}).items() if k in ("title", "body") and v}
    if alert:
        aps["alert"] = alert
    if (broadcast.get("alert") or {}).get("sound"):
        aps["sound"] = broadcast["alert"]["sound"]
    return {"aps": aps}


def broadcast_finished(outcome: tuple[str, str | None]) -> Step:
    """The campaign's last step once its broadcast has a record: Complete when APNs took it (pure)."""
    status, described = outcome
    if status == "sent":
        message = "broadcast sent to the channel"
        return Step("Completed", "Completed", message, Action.FINISH,
                    conditions=(Condition("Complete", True, "Completed", message),))  # fmt: skip
    message = f"the broadcast was refused: {described or status}"
    return Step("Failed", "BroadcastFailed", message, Action.FINISH,
                conditions=(Condition("Failed", True, "BroadcastFailed", message),))  # fmt: skip


def ready(answer: ChannelAnswer | None, channel_id: str | None, problem: Unusable | None = None) -> Condition:
    """The Ready condition of a channel after an attempt (pure)."""
    if channel_id:
        return Condition("Ready", True, "Created", f"APNs channel {channel_id}")
    if problem is not None:
        return Condition("Ready", False, problem.reason, str(problem))
    assert answer is not None
    reason = answer.reason or ("Unreachable" if answer.status == 0 else f"HTTP{answer.status}")
    return Condition("Ready", False, reason, answer.describe())


class ChannelReconciler:
    """The LiveActivityChannel handlers, sharing the operator's store, Redis and Kubernetes client."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator

    def register(self, registry: kopf.OperatorRegistry, retry: float) -> None:
        for handler in (kopf.on.resume, kopf.on.create, kopf.on.update):
            handler(GROUP, VERSION, CHANNELS, registry=registry, backoff=retry)(self.reconcile)
        kopf.on.delete(GROUP, VERSION, CHANNELS, registry=registry, backoff=retry)(self.delete)

    async def reconcile(
        self, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
    ) -> None:
        """Create the channel at APNs once; later runs only keep the status in step."""
        namespace, name = meta["namespace"], meta["name"]
        channel_id = status.get("channelId")
        if channel_id:
            self._status(body, status, patch, ready(None, channel_id), {"observedGeneration": meta.get("generation")})
            return
        try:
            identity = await asyncio.to_thread(self._identity, namespace, spec["credentialRef"]["name"])
        except Unusable as problem:
            self._status(body, status, patch, ready(None, None, problem), {})
            raise kopf.TemporaryError(str(problem), delay=30) from None
        policy = int(spec.get("messageStoragePolicy") or 0)
        answer = await self._call(identity, lambda client: client.create(policy))
        if not answer.ok or not answer.channel_id:
            self._status(body, status, patch, ready(answer, None), {})
            raise kopf.TemporaryError(answer.describe(), delay=10 if answer.retryable else 60)
        typed = identity.spec
        await asyncio.to_thread(
            store.add_channel, self.operator.engine, app=typed.bundle_id, environment=typed.environment,
            channel_id=answer.channel_id, storage_policy=policy, name=name,
            labels=dict(meta.get("labels") or {}), source=f"{namespace}/{name}",
        )  # fmt: skip
        fields = {"channelId": answer.channel_id, "bundleId": typed.bundle_id, "environment": typed.environment,
                  "observedGeneration": meta.get("generation")}  # fmt: skip
        self._status(body, status, patch, ready(answer, answer.channel_id), fields)

    async def delete(self, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, retry: int,
                     **_: Any) -> None:  # fmt: skip
        """Delete the channel at APNs; leave it there (with a Warning Event) rather than hold the resource."""
        channel_id = status.get("channelId")
        if not channel_id:
            return
        namespace, name = meta["namespace"], meta["name"]
        try:
            identity = await asyncio.to_thread(self._identity, namespace, spec["credentialRef"]["name"])
        except Unusable as problem:
            self._left(body, channel_id, str(problem))
            await asyncio.to_thread(self._forget, status, channel_id)
            return
        answer = await self._call(identity, lambda client: client.delete(channel_id))
        if answer.ok or answer.missing:
            await asyncio.to_thread(self._forget, status, channel_id)
            kopf.event(body, type="Normal", reason="Deleted", message=f"APNs channel {channel_id} deleted")
            log.info("LiveActivityChannel %s/%s: APNs channel %s deleted", namespace, name, channel_id)
            return
        if answer.retryable and retry < GIVE_UP_AFTER:
            raise kopf.TemporaryError(answer.describe(), delay=5)
        self._left(body, channel_id, answer.describe())
        await asyncio.to_thread(self._forget, status, channel_id)

    # --- campaigns that broadcast to a channel

    async def run_broadcast(
        self, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, stopped: kopf.DaemonStopped
    ) -> None:
        """A campaign of one broadcast: wait for the credential, the channel and startAt, send once, record it."""
        namespace, name = meta["namespace"], meta["name"]
        campaign = f"{namespace}/{name}"
        state: dict[str, Any] = {"conditions": list(status.get("conditions") or [])}
        written = dict(status)
        record_id = uuid.uuid5(uuid.NAMESPACE_URL, f"noti:{meta.get('uid') or campaign}:broadcast")
        interval = self.operator.settings.operator_interval_seconds
        broadcast = dict(spec["broadcast"])
        while not stopped:
            step, channel_id, identity = await self._broadcast_readiness(namespace, spec, broadcast)
            if step is None:
                assert identity is not None and channel_id is not None
                existing = await asyncio.to_thread(store.broadcast_record, self.operator.engine, record_id)
                if existing is None:  # not sent before (an operator restart must not send it twice)
                    state["startedAt"] = state.get("startedAt") or written.get("startedAt") or now_text()
                    await self.operator._campaign_status(body, state, written, Step(
                        "Running", "Broadcasting", f"broadcasting to channel {channel_id}", Action.FOLLOW))  # fmt: skip
                    existing = await self._send_broadcast(identity, channel_id, broadcast, record_id, campaign)
                step = broadcast_finished(existing)
                state.update(total=1, queued=0, sent=int(existing[0] == "sent"), failed=int(existing[0] != "sent"),
                             invalidTokens=0, completedAt=now_text(), channelId=channel_id)  # fmt: skip
                state["startedAt"] = state.get("startedAt") or written.get("startedAt") or now_text()
            await self.operator._campaign_status(body, state, written, step)
            if step.action is Action.FINISH:
                return
            await stopped.wait(step.wait or interval)

    async def _broadcast_readiness(
        self, namespace: str, spec: Mapping[str, Any], broadcast: Mapping[str, Any]
    ) -> tuple[Step | None, str | None, Identity | None]:
        """What the campaign waits for (a Step), or None with the channel id and credential when it can go."""
        credential = spec["credentialRef"]["name"]
        try:
            identity = await asyncio.to_thread(self._identity, namespace, credential)
        except Unusable as problem:
            if problem.reason == "CredentialNotFound":
                return Step("Pending", "CredentialNotFound", str(problem), Action.WAIT, conditions=(
                    Condition("CredentialFound", False, "CredentialNotFound", str(problem)),)), None, None  # fmt: skip
            return failed(problem.reason, str(problem)), None, None
        found = Condition("CredentialFound", True, "CredentialFound", f"APNsCredential {namespace}/{credential}")
        start_at = spec.get("startAt")
        if start_at and datetime.fromisoformat(str(start_at).replace("Z", "+00:00")) > datetime.now(UTC):
            waiting = Step("Scheduled", "Scheduled", f"broadcast at {start_at}", Action.WAIT, conditions=(found,))
            return waiting, None, None
        if spec.get("suspend"):
            paused = Condition("Suspended", True, "Suspended")
            return Step("Paused", "Suspended", "suspended", Action.WAIT, conditions=(found, paused)), None, None
        channel_id = broadcast.get("channelId")
        if not channel_id:
            ref = broadcast["channelRef"]["name"]
            channel_id = await asyncio.to_thread(self._channel_id, namespace, ref)
            if not channel_id:
                message = f"LiveActivityChannel {namespace}/{ref} has no channel id yet"
                return Step("Pending", "ChannelNotReady", message, Action.WAIT, conditions=(found,)), None, None
        return None, str(channel_id), identity

    def _channel_id(self, namespace: str, name: str) -> str | None:
        try:
            found = k8s.CustomObjectsApi(self.operator.api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, CHANNELS, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        channel_id = (dict(found).get("status") or {}).get("channelId")  # type: ignore[call-overload]
        return str(channel_id) if channel_id else None

    async def _send_broadcast(
        self, identity: Identity, channel_id: str, broadcast: Mapping[str, Any], record_id: uuid.UUID, campaign: str
    ) -> tuple[str, str | None]:
        payload = broadcast_payload(broadcast)
        priority, expiration = int(broadcast.get("priority", 10)), int(broadcast.get("expiration", 0))
        body = orjson.dumps(payload)

        def send(client: ChannelClient) -> Any:
            return client.broadcast(channel_id, body, priority=priority, expiration=expiration, request_id=record_id)

        answer = await self._call(identity, send)
        for _ in range(3):  # APNs busy or away: a few tries, then the record says so
            if not answer.retryable:
                break
            await asyncio.sleep(2)
            answer = await self._call(identity, send)
        typed = identity.spec
        await asyncio.to_thread(
            store.record_broadcast, self.operator.engine, id=record_id, app=typed.bundle_id, channel_id=channel_id,
            payload=payload, priority=priority, expiration=expiration, status_code=answer.status,
            reason=answer.reason, request_id=answer.request_id, apns_unique_id=answer.apns_unique_id,
            campaign=campaign,
        )  # fmt: skip
        return ("sent" if answer.ok else "failed"), answer.describe()

    # --- helpers

    def _left(self, body: kopf.Body, channel_id: str, why: str) -> None:
        message = f"APNs channel {channel_id} was not deleted ({why}); delete it with another key of the app"
        meta = body["metadata"]
        log.warning("LiveActivityChannel %s/%s: %s", meta["namespace"], meta["name"], message)
        kopf.event(body, type="Warning", reason="ChannelLeft", message=message)

    def _forget(self, status: Mapping[str, Any], channel_id: str) -> None:
        if status.get("bundleId") and status.get("environment"):
            store.remove_channel(self.operator.engine, status["bundleId"], status["environment"], channel_id)

    def _identity(self, namespace: str, credential: str) -> Identity:
        """The credential's spec, key and CA, read from the API (the key never leaves this process)."""
        api = self.operator.api
        try:
            found = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, CREDENTIALS, credential
            )
        except ApiException as exc:
            if exc.status == 404:
                raise Unusable("CredentialNotFound", f"APNsCredential {namespace}/{credential} not found") from None
            raise
        typed = CredentialSpec.from_spec(found["spec"])  # type: ignore[index]
        if typed.private_key is None:
            raise Unusable("TokenAuthRequired", "channels are managed with a token credential (privateKeySecretRef)")
        key_pem = self._secret(namespace, typed.private_key.name, typed.private_key.key)
        try:
            load_signing_key(key_pem)
        except CredentialKeyError as exc:
            raise Unusable("KeyInvalid", str(exc)) from None
        ca_pem = self._secret(namespace, typed.ca.name, typed.ca.key) if typed.ca is not None else None
        return Identity(typed, key_pem, ca_pem)

    def _secret(self, namespace: str, name: str, key: str) -> bytes:
        try:
            secret = k8s.CoreV1Api(self.operator.api).read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise Unusable("SecretNotFound", f"Secret {namespace}/{name} not found") from None
            raise
        data = (secret.data or {}).get(key)
        if data is None:
            raise Unusable("SecretNotFound", f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data)

    async def _call(self, identity: Identity, action: Any) -> ChannelAnswer:
        typed = identity.spec
        context = ssl.create_default_context(cadata=identity.ca_pem.decode() if identity.ca_pem else None)
        context.set_alpn_protocols(["h2"])
        # The token is shared with the credential's senders (same Apple identity): no extra token churn.
        tokens = ProviderTokens(
            load_signing_key(identity.key_pem), typed.key_id, typed.team_id, redis=self.operator.redis
        )
        client = ChannelClient(
            typed.bundle_id, environment=typed.environment, tokens=tokens,
            management_url=typed.channels_endpoint or None, push_url=typed.endpoint or None, ssl_context=context,
            proxy=typed.proxy or None,
        )  # fmt: skip
        try:
            answer: ChannelAnswer = await action(client)
            return answer
        finally:
            await client.aclose()

    def _status(
        self, body: kopf.Body, status: kopf.Status, patch: kopf.Patch, condition: Condition, fields: dict[str, Any]
    ) -> None:
        current = status.get("conditions")
        merged = with_conditions(current, [condition])
        for moved in transitions(current, merged):
            self.operator._event(body, moved, warning=moved["status"] == "False")
        wanted = {**fields, "conditions": merged}
        patch.status.update({key: value for key, value in wanted.items() if status.get(key) != value})
