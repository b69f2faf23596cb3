"""The operator against a real kube-apiserver, PostgreSQL, Redis and the APNs simulator.

It runs as ``noti operator`` in a subprocess, as in its pod. There is no kubelet: a sender
Deployment's pods never start, so the end-to-end test runs a sender as a local process
with the environment the Deployment gives its pods.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client as k8s
from sqlalchemy import Engine, insert, select

from harness.apns import SimulatorProcess
from harness.k8s import KubeCluster, unique_name
from harness.operator import (
    CONNECTIONS,
    GROUP,
    VERSION,
    OperatorProcess,
    apply_campaign,
    apply_credential,
    report_available,
    secrets,
    start_operator,
    start_sender,
    stop_operator,
    stop_sender,
)
from harness.procs import wait_until
from harness.services import PostgresServer, RedisServer
from noti.operator.deployment import FINGERPRINT_ANNOTATION, key_fingerprint
from noti.queue import ROUTES, QueuedNotification, StreamKeys, campaign_settings
from noti.store.models import Device, Notification, TokenKind
from noti.store.tokens import TokenFields, upsert_tokens


@pytest.fixture
def operator(
    noti_crds: KubeCluster, k8s_namespace: str, database_url: str, redis_url: str, clean_db: Engine,
    clean_redis: redis.Redis, tmp_path: Path,
) -> Iterator[OperatorProcess]:  # fmt: skip
    """The operator of the test's namespace, healthy (so: leading)."""
    running = start_operator(noti_crds, k8s_namespace, database_url, redis_url, tmp_path / "operator")
    try:
        wait_until(running.healthy, timeout=60,
                   what=f"the operator's /healthz\n{running.tail()}")  # fmt: skip
        yield running
    finally:
        stop_operator(running)


@pytest.fixture
def api(noti_crds: KubeCluster) -> Iterator[k8s.ApiClient]:
    client = noti_crds.api_client()
    yield client
    client.close()


def custom_if(
    api: k8s.ApiClient, namespace: str, plural: str, name: str, wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    """The object when ``wanted`` holds for it, else None (for :func:`eventually`)."""
    found = custom(api, namespace, plural, name)
    return found if wanted(found) else None


def custom(api: k8s.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name))  # fmt: skip


def eventually(check: Callable[[], Any], what: str, operator: OperatorProcess, timeout: float = 60) -> Any:
    """The first truthy result of ``check``; fails with the operator's log when there is none in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        assert operator.process.poll() is None, f"the operator exited:\n{operator.tail()}"
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f}s\n{operator.tail()}")


def condition(obj: dict[str, Any], type_: str = "Ready") -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def events(cluster: KubeCluster, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    listed = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e for e in listed if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name]


def seed_devices(engine: Engine, app: str, count: int) -> list[str]:
    tokens = [f"{n:064x}" for n in range(1, count + 1)]
    with engine.begin() as connection:
        connection.execute(insert(Device), [{"app": app, "device_token": t, "tags": []} for t in tokens])
    return tokens


def test_credential_becomes_a_sender_deployment_that_follows_backlog_and_key(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    ns = k8s_namespace
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_credential(noti_crds, ns, apns_simulator)
    apps = k8s.AppsV1Api(api)
    deployment = eventually(lambda: _deployment(apps, ns), "the sender Deployment", operator)
    # Deployed is not ready: no sender runs yet (here no kubelet ever starts one).
    unavailable = eventually(
        lambda: custom_if(api, ns, "apnscredentials", "shop", lambda c: condition(c).get("reason") ==
                          "SendersUnavailable"), "Ready=False while no sender is available", operator,
    )  # fmt: skip
    assert condition(unavailable)["status"] == "False" and unavailable["status"]["availableSenders"] == 0
    report_available(apps, ns, 1)  # what the Deployment controller reports once a sender pod is ready
    credential = eventually(
        lambda: custom_if(api, ns, "apnscredentials", "shop", lambda c: condition(c).get("status") == "True"),
        "Ready=True", operator,
    )  # fmt: skip
    assert credential["status"]["availableSenders"] == 1
    assert credential["status"]["observedGeneration"] == credential["metadata"]["generation"]

    fingerprint = key_fingerprint(apns_simulator.private_key_pem)
    assert credential["status"]["keyFingerprint"] == fingerprint
    template = deployment.spec.template
    assert template.metadata.annotations[FINGERPRINT_ANNOTATION] == fingerprint
    container = template.spec.containers[0]
    env = {e.name: e.value for e in container.env}
    assert env["NOTI_CREDENTIAL"] == f"{ns}/shop" and env["NOTI_APNS_BUNDLE_ID"] == apns_simulator.bundle_id
    assert (
        env["NOTI_APNS_KEY_FILE"] == "/var/run/noti/apns/AuthKey.p8" and env["NOTI_APNS_ENDPOINT"] == apns_simulator.url
    )
    assert env["NOTI_APNS_CA_FILE"] == "/var/run/noti/ca/ca.crt"
    assert container.image == "registry.example/noti:test" and container.args == ["sender"]
    assert container.env_from[0].secret_ref.name == CONNECTIONS
    assert (container.liveness_probe.http_get.path, container.readiness_probe.http_get.path) == ("/healthz", "/readyz")
    assert template.spec.automount_service_account_token is False
    assert {v.secret.secret_name for v in template.spec.volumes if v.secret} == {"apns-key", "apns-ca"}
    assert template.spec.enable_service_links is False and template.spec.security_context.fs_group == 10001
    assert [s.name for s in template.spec.image_pull_secrets] == ["regcred"]
    owner = deployment.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("APNsCredential", "shop",
                                                                      credential["metadata"]["uid"], True)  # fmt: skip
    assert deployment.spec.replicas == 1

    # At rest, the operator's periodic look writes nothing: neither the Deployment nor the status change.
    settled = eventually(
        lambda: custom_if(api, ns, "apnscredentials", "shop", lambda c: c["status"].get("backlog") == 0),
        "backlog 0 reported", operator,
    )  # fmt: skip
    before = (_deployment(apps, ns).metadata.resource_version, settled["metadata"]["resourceVersion"])
    time.sleep(2.5)  # five looks at 0.5 s
    after = (_deployment(apps, ns).metadata.resource_version,
             custom(api, ns, "apnscredentials", "shop")["metadata"]["resourceVersion"])  # fmt: skip
    assert after == before

    # A backlog of 350 (10/s per sender, to drain within 10 s) wakes the most senders allowed: 4; once
    # worked off, they go after 3 s.
    queue = StreamKeys(f"{ns}/shop")
    for n in range(350):
        message = QueuedNotification(uuid.uuid4(), f"{n:064x}", apns_simulator.bundle_id, {"title": "x"})
        clean_redis.xadd(queue.transactional_stream, message.encode())  # type: ignore[arg-type]
    eventually(lambda: _deployment(apps, ns).spec.replicas == 4, "scale up to 4", operator)
    eventually(lambda: custom(api, ns, "apnscredentials", "shop")["status"].get("backlog") == 350, "backlog", operator)
    clean_redis.delete(queue.transactional_stream)
    started = time.monotonic()
    eventually(lambda: _deployment(apps, ns).spec.replicas == 1, "scale back to 1", operator)
    # Not at once: the 3 s window counts from the last look that saw the backlog (the window itself is
    # unit-tested in test_operator_scaling.py).
    assert time.monotonic() - started >= 1.0, "scaled down before the stabilization window passed"

    # APNs refusing the key (as a sender reports it) makes the credential not ready, saying why.
    clean_redis.hset(queue.status, mapping={"state": "CredentialFailed", "reason": "InvalidProviderToken"})
    refused = eventually(lambda: condition(custom(api, ns, "apnscredentials", "shop")).get("reason") ==
                         "InvalidProviderToken", "Ready=False on refusal", operator)  # fmt: skip
    assert refused
    clean_redis.delete(queue.status)

    # A key that is no key: not ready, and nothing of the Secret in the status or the events.
    garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbCwgc2VjcmV0MTIz\n-----END PRIVATE KEY-----\n"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "apns-key"},
        "stringData": {"AuthKey.p8": garbage},
    }
    noti_crds.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(secret))
    invalid = eventually(
        lambda: custom_if(api, ns, "apnscredentials", "shop", lambda c: condition(c).get("reason") == "KeyInvalid"),
        "Ready=False KeyInvalid", operator,
    )  # fmt: skip
    shown = json.dumps(invalid) + noti_crds.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert "bm90IGEga2V5" not in shown and "BEGIN" not in shown
    assert "PKCS#8" in condition(invalid)["message"]

    # The right key again rolls the senders: the pod template carries the new fingerprint.
    apply_credential(noti_crds, ns, apns_simulator)
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    eventually(lambda: condition(custom(api, ns, "apnscredentials", "shop")).get("status") == "True", "ready again",
               operator)  # fmt: skip

    # Each transition and failure was an Event, with the conditions' reasons.
    reasons = {event["reason"] for event in events(noti_crds, ns, "APNsCredential", "shop")}
    assert {"SendersUnavailable", "SendersAvailable", "Scaled", "InvalidProviderToken", "KeyInvalid"} <= reasons


def _deployment(apps: k8s.AppsV1Api, namespace: str) -> k8s.V1Deployment | None:
    try:
        return apps.read_namespaced_deployment("shop-sender", namespace)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_a_certificate_credential_becomes_senders_with_the_p12_and_its_password_from_the_secret(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str,
) -> None:  # fmt: skip
    ns = k8s_namespace
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    certificate = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "apns-cert"},
                   "stringData": {"apns.p12": "not really a p12", "password": "s3cret"}}  # fmt: skip
    noti_crds.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(certificate))
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "APNsCredential", "metadata": {"name": "shop"},
        "spec": {"bundleId": apns_simulator.bundle_id, "environment": "sandbox", "proxy": "http://proxy.corp:3128",
                 "certificateSecretRef": {"name": "apns-cert", "passwordKey": "password"}},
    }  # fmt: skip
    noti_crds.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest))
    apps = k8s.AppsV1Api(api)
    deployment = eventually(lambda: _deployment(apps, ns), "the sender Deployment", operator)
    container = deployment.spec.template.spec.containers[0]
    env = {item.name: item for item in container.env}
    assert env["NOTI_APNS_CERT_FILE"].value.endswith("/apns.p12")
    assert env["NOTI_APNS_CERT_PASSWORD"].value is None  # read from the Secret by the kubelet, not in the spec
    assert env["NOTI_APNS_CERT_PASSWORD"].value_from.secret_key_ref.name == "apns-cert"
    assert env["NOTI_APNS_PROXY"].value == "http://proxy.corp:3128"
    assert "NOTI_APNS_KEY_FILE" not in env
    assert "s3cret" not in json.dumps(api.sanitize_for_serialization(deployment))
    credential = eventually(
        lambda: custom_if(api, ns, "apnscredentials", "shop", lambda c: condition(c, "KeyValid").get("status")),
        "KeyValid", operator,
    )  # fmt: skip
    assert condition(credential, "KeyValid")["reason"] == "CertificateLoaded"
    assert credential["status"]["keyFingerprint"].startswith("SHA256:")


def test_campaign_runs_to_completion_with_a_sender_of_the_credentials_deployment(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine, tmp_path: Path,
) -> None:  # fmt: skip
    ns = k8s_namespace
    tokens = seed_devices(clean_db, apns_simulator.bundle_id, 30)
    apns_simulator.set_faults(unregistered=tokens[:3])
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_credential(noti_crds, ns, apns_simulator)
    apply_campaign(noti_crds, ns, "winter", ratePerSecond=0)
    running = eventually(
        lambda: custom_if(api, ns, "notificationcampaigns", "winter",
                          lambda c: c.get("status", {}).get("phase") == "Running" and c["status"].get("total") == 30),
        "phase Running with 30 queued", operator,
    )  # fmt: skip
    assert running["status"]["startedAt"]
    eventually(lambda: _deployment(k8s.AppsV1Api(api), ns), "the sender Deployment", operator)

    env = noti_crds.process_env("shop-sender", ns)
    assert env["NOTI_DATABASE_URL"] == database_url  # from the connections Secret, through envFrom
    sender = start_sender(noti_crds, ns, apns_simulator, tmp_path)
    try:
        # What a user waits on: Complete, which only a finished campaign has.
        noti_crds.kubectl(
            "wait", "-n", ns, "--for=condition=Complete", "notificationcampaign/winter", "--timeout=90s", timeout=100
        )
        done = custom(api, ns, "notificationcampaigns", "winter")
    finally:
        stop_sender(sender)
    status = done["status"]
    assert (status["total"], status["sent"], status["invalidTokens"], status["failed"]) == (30, 27, 3, 0)
    assert status["completedAt"] >= status["startedAt"]
    assert (done["status"]["phase"], condition(done, "Complete")["status"]) == ("Completed", "True")
    assert condition(done, "Complete")["message"] == "27 of 30 sent, 0 failed, 3 invalid tokens"
    assert condition(done, "Failed") == {} and done["status"]["observedGeneration"] == done["metadata"]["generation"]
    reasons = [event["reason"] for event in events(noti_crds, ns, "NotificationCampaign", "winter")]
    assert "FanningOut" in reasons and "Completed" in reasons
    with clean_db.connect() as connection:
        rows = connection.execute(select(Notification.status).where(Notification.campaign == f"{ns}/winter")).all()
    assert sorted(r.status for r in rows) == ["invalid_token"] * 3 + ["sent"] * 27
    table = noti_crds.kubectl("get", "notificationcampaigns", "-n", ns).stdout.split()
    assert table[:7] == ["NAME", "PHASE", "SENT", "TOTAL", "FAILED", "INVALID", "AGE"]
    assert table[7:13] == ["winter", "Completed", "27", "30", "0", "3"]
    assert "Will escalate" not in operator.log.read_text()  # kopf cancelled no daemon that was ending anyway


def test_a_live_activity_campaign_starts_activities_on_push_to_start_tokens_to_completion(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine, tmp_path: Path,
) -> None:  # fmt: skip
    ns = k8s_namespace
    seed_devices(clean_db, apns_simulator.bundle_id, 8)
    with clean_db.begin() as connection:
        devices = connection.execute(select(Device.id).order_by(Device.id)).scalars().all()
        upsert_tokens(connection, [TokenFields(d, TokenKind.PUSH_TO_START, f"{d:0160x}", "MatchAttributes")
                                   for d in devices[:5]])  # fmt: skip
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_credential(noti_crds, ns, apns_simulator)
    apply_campaign(
        noti_crds, ns, "kickoff", ratePerSecond=0, notification={"title": "Kick-off", "body": "A v B"},
        liveActivity={"event": "start", "attributesType": "MatchAttributes", "attributes": {"home": "A"},
                      "contentState": {"score": "0-0"}, "inputPushToken": True},
    )  # fmt: skip
    eventually(lambda: _deployment(k8s.AppsV1Api(api), ns), "the sender Deployment", operator)
    sender = start_sender(noti_crds, ns, apns_simulator, tmp_path)
    try:
        noti_crds.kubectl(
            "wait", "-n", ns, "--for=condition=Complete", "notificationcampaign/kickoff", "--timeout=90s", timeout=100
        )
    finally:
        stop_sender(sender)
    status = custom(api, ns, "notificationcampaigns", "kickoff")["status"]
    assert (status["total"], status["sent"], status["failed"]) == (5, 5, 0)  # one per push-to-start token
    assert apns_simulator.counters()["live_activities"] == {"start/10": 5}
    with clean_db.connect() as connection:
        rows = connection.execute(select(Notification.push_type, Notification.event, Notification.token_id)).all()
    assert sorted((r.push_type, r.event) for r in rows) == [("liveactivity", "start")] * 5
    assert all(r.token_id is not None for r in rows)
    edit = noti_crds.kubectl(
        "patch", "-n", ns, "notificationcampaigns", "kickoff", "--type=merge",
        "-p", '{"spec": {"liveActivity": {"event": "end"}}}', check=False,
    )  # fmt: skip
    assert edit.returncode != 0 and "cannot change once the campaign started" in edit.stderr


def test_campaign_waits_for_its_credential_and_start_follows_suspension_and_stops_when_deleted(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    ns = k8s_namespace
    seed_devices(clean_db, apns_simulator.bundle_id, 12)
    apply_campaign(noti_crds, ns, "spring", ratePerSecond=50)
    apply_campaign(noti_crds, ns, "later", startAt="2099-01-01T00:00:00Z")

    def phase(name: str) -> str | None:
        return cast(str | None, custom(api, ns, "notificationcampaigns", name).get("status", {}).get("phase"))

    eventually(lambda: phase("spring") == "Pending", "Pending without a credential", operator)
    pending = custom(api, ns, "notificationcampaigns", "spring")
    assert condition(pending, "CredentialFound")["reason"] == "CredentialNotFound"
    assert condition(pending, "Complete") == {} and condition(pending, "Ready") == {}
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_credential(noti_crds, ns, apns_simulator)
    eventually(
        lambda: custom_if(api, ns, "notificationcampaigns", "spring",
                          lambda c: c.get("status", {}).get("phase") == "Running" and c["status"].get("total") == 12),
        "Running, all 12 queued, once the credential exists", operator,
    )  # fmt: skip
    eventually(lambda: phase("later") == "Scheduled", "Scheduled until startAt", operator)
    settings = campaign_settings(f"{ns}/spring")
    assert clean_redis.hmget(settings, "rate", "suspend") == [b"50", b"0"]

    noti_crds.kubectl("patch", "-n", ns, "notificationcampaigns", "spring", "--type=merge",
                      "-p", '{"spec": {"suspend": true, "ratePerSecond": 20}}')  # fmt: skip
    eventually(lambda: phase("spring") == "Paused", "Paused when suspended", operator)
    assert clean_redis.hmget(settings, "rate", "suspend") == [b"20", b"1"]

    # Deleted, it stops: no queue, nothing left in flight, the unsent records closed as failed.
    queue = StreamKeys(f"{ns}/shop")
    assert clean_redis.xlen(queue.campaign_stream(f"{ns}/spring")) == 12
    noti_crds.kubectl("delete", "-n", ns, "notificationcampaigns", "spring", "--timeout=30s")
    assert clean_redis.exists(queue.campaign_stream(f"{ns}/spring"), settings) == 0
    assert f"{ns}/spring".encode() not in clean_redis.smembers(queue.campaigns)
    with clean_db.connect() as connection:
        rows = connection.execute(
            select(Notification.status, Notification.apns_reason).where(Notification.campaign == f"{ns}/spring")
        ).all()
    assert [tuple(r) for r in rows] == [("failed", "CampaignDeleted")] * 12


def test_a_campaign_that_can_never_be_sent_fails_before_anything_is_queued(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    ns = k8s_namespace
    seed_devices(clean_db, apns_simulator.bundle_id, 5)
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_credential(noti_crds, ns, apns_simulator)
    apply_campaign(noti_crds, ns, "huge", notification={"title": "Big", "body": "x" * 5042})
    noti_crds.kubectl("wait", "-n", ns, "--for=condition=Failed", "notificationcampaign/huge", "--timeout=60s")
    failed = custom(api, ns, "notificationcampaigns", "huge")
    assert failed["status"]["phase"] == "Failed"
    assert condition(failed, "Failed")["reason"] == "InvalidNotification"
    assert "4096" in condition(failed, "Failed")["message"] and condition(failed, "Complete") == {}
    queue = StreamKeys(f"{ns}/shop")
    assert clean_redis.xlen(queue.campaign_stream(f"{ns}/huge")) == 0
    with clean_db.connect() as connection:
        assert connection.execute(select(Notification.id).where(Notification.campaign == f"{ns}/huge")).all() == []
    warnings = [e for e in events(noti_crds, ns, "NotificationCampaign", "huge") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["InvalidNotification"]


def test_a_started_campaign_keeps_its_content_and_its_phase(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    ns = k8s_namespace
    seed_devices(clean_db, apns_simulator.bundle_id, 10)
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_credential(noti_crds, ns, apns_simulator)
    apply_campaign(noti_crds, ns, "fixed", ratePerSecond=1)  # no sender runs: it stays Running
    eventually(
        lambda: custom_if(api, ns, "notificationcampaigns", "fixed",
                          lambda c: c.get("status", {}).get("phase") == "Running" and c["status"].get("total") == 10),
        "Running with 10 queued", operator,
    )  # fmt: skip
    edit = noti_crds.kubectl(
        "patch", "-n", ns, "notificationcampaigns", "fixed", "--type=merge",
        "-p", '{"spec": {"notification": {"title": "Changed"}}}', check=False,
    )  # fmt: skip
    assert edit.returncode != 0 and "cannot change once the campaign started" in edit.stderr
    noti_crds.kubectl("patch", "-n", ns, "notificationcampaigns", "fixed", "--type=merge",
                      "-p", '{"spec": {"ratePerSecond": 5}}')  # fmt: skip
    generation = custom(api, ns, "notificationcampaigns", "fixed")["metadata"]["generation"]
    eventually(
        lambda: custom(api, ns, "notificationcampaigns", "fixed")["status"].get("observedGeneration") == generation,
        "the new generation observed", operator,
    )  # fmt: skip
    assert clean_redis.hget(campaign_settings(f"{ns}/fixed"), "rate") == b"5"

    # Its credential goes: a condition says so; the phase does not go back to Pending.
    noti_crds.kubectl("delete", "-n", ns, "apnscredentials", "shop", "--timeout=30s")
    lost = eventually(
        lambda: custom_if(api, ns, "notificationcampaigns", "fixed",
                          lambda c: condition(c, "CredentialFound").get("status") == "False"),
        "CredentialFound=False", operator,
    )  # fmt: skip
    assert lost["status"]["phase"] == "Running"
    time.sleep(1.5)  # three more looks
    assert custom(api, ns, "notificationcampaigns", "fixed")["status"]["phase"] == "Running"
    warnings = [e["reason"] for e in events(noti_crds, ns, "NotificationCampaign", "fixed") if e["type"] == "Warning"]
    assert "CredentialNotFound" in warnings


def test_a_credential_deleted_while_it_is_being_reconciled_is_gone_in_seconds_and_serves_nothing(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_redis: redis.Redis,
) -> None:  # fmt: skip
    ns = k8s_namespace
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_credential(noti_crds, ns, apns_simulator)
    route = f"sandbox:{apns_simulator.bundle_id}"
    eventually(lambda: clean_redis.hget(ROUTES, route), "the credential's route", operator)
    # Redis holds every command for 3 s: the credential's periodic reconcile (every 0.5 s) is caught midway
    # when the delete comes, as on a busy machine.
    clean_redis.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    time.sleep(1)
    started = time.monotonic()
    noti_crds.kubectl("delete", "-n", ns, "apnscredentials", "shop", "--timeout=30s", timeout=40)
    took = time.monotonic() - started
    assert took < 10, f"the delete took {took:.1f}s\n{operator.tail()}"
    assert clean_redis.hget(ROUTES, route) is None  # the reconcile under way did not claim it again


def test_two_operators_one_leader_and_every_token_delivered_once(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine, tmp_path: Path,
) -> None:  # fmt: skip
    ns = k8s_namespace
    tokens = seed_devices(clean_db, apns_simulator.bundle_id, 40)
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    second = start_operator(noti_crds, ns, database_url, redis_url, tmp_path / "second")
    try:
        coordination = k8s.CoordinationV1Api(api)

        def holder() -> str | None:
            return cast(str | None, coordination.read_namespaced_lease("noti-operator", ns).spec.holder_identity)

        eventually(lambda: "waiting to hold the Lease" in second.log.read_text(), "the second one waits", operator)
        assert holder() is not None and holder().endswith(f"-{operator.process.pid}")  # type: ignore[union-attr]
        apply_credential(noti_crds, ns, apns_simulator)
        apply_campaign(noti_crds, ns, "twice", ratePerSecond=0)
        eventually(
            lambda: custom_if(api, ns, "notificationcampaigns", "twice",
                              lambda c: c.get("status", {}).get("total") == 40),
            "all 40 counted by the leader", operator,
        )  # fmt: skip
        assert "holds the Lease" not in second.log.read_text()  # it never acted

        operator.process.kill()  # the leader dies without a word; the follower takes over once the Lease expires
        operator.process.wait()
        eventually(lambda: (holder() or "").endswith(f"-{second.process.pid}"), "the follower leads", second,
                   timeout=30)  # fmt: skip
        eventually(lambda: _deployment(k8s.AppsV1Api(api), ns), "the sender Deployment", second)
        sender = start_sender(noti_crds, ns, apns_simulator, tmp_path)
        try:
            noti_crds.kubectl("wait", "-n", ns, "--for=condition=Complete", "notificationcampaign/twice",
                              "--timeout=90s", timeout=100)  # fmt: skip
        finally:
            stop_sender(sender)
    finally:
        stop_operator(second)
    by_token = apns_simulator.counters()["by_token"]
    assert {token: by_token.get(token) for token in tokens} == dict.fromkeys(tokens, 1)


def test_key_fingerprint_names_the_public_key_and_refuses_what_is_not_an_apns_key(
    apns_simulator: SimulatorProcess,
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from noti.operator.deployment import InvalidKey

    pem = apns_simulator.private_key_pem
    fingerprint = key_fingerprint(pem)
    assert fingerprint.startswith("SHA256:") and fingerprint == key_fingerprint(pem)
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert key_fingerprint(other) != fingerprint
    rsa_key = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InvalidKey, match="ES256"):
        key_fingerprint(rsa_key)
    with pytest.raises(InvalidKey, match="PKCS#8") as refused:
        key_fingerprint(b"secret-material-that-is-no-key")
    assert "secret-material" not in str(refused.value)


def test_operator_carries_on_after_redis_and_postgresql_restart(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine,
    redis_server: RedisServer, postgres_server: PostgresServer,
) -> None:  # fmt: skip
    ns = k8s_namespace
    seed_devices(clean_db, apns_simulator.bundle_id, 20)
    secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_credential(noti_crds, ns, apns_simulator)
    apply_campaign(noti_crds, ns, "steady")
    eventually(lambda: _deployment(k8s.AppsV1Api(api), ns), "the sender Deployment", operator)
    report_available(k8s.AppsV1Api(api), ns, 1)
    eventually(
        lambda: custom_if(api, ns, "notificationcampaigns", "steady",
                          lambda c: c.get("status", {}).get("phase") == "Running" and c["status"].get("total") == 20),
        "Running with 20 queued", operator,
    )  # fmt: skip

    redis_server.restart()  # a clean shutdown: the append-only file keeps the queues
    postgres_server.restart()

    # Still working: a change to the campaign reaches the senders' settings and the status.
    noti_crds.kubectl("patch", "-n", ns, "notificationcampaigns", "steady", "--type=merge",
                      "-p", '{"spec": {"suspend": true}}')  # fmt: skip
    eventually(
        lambda: custom_if(api, ns, "notificationcampaigns", "steady",
                          lambda c: c["status"]["phase"] == "Paused" and c["status"]["total"] == 20),
        "Paused after the restarts", operator,
    )  # fmt: skip
    with redis.Redis.from_url(redis_url) as client:
        assert client.hget(campaign_settings(f"{ns}/steady"), "suspend") == b"1"
    eventually(
        lambda: custom_if(api, ns, "apnscredentials", "shop",
                          lambda c: c["status"].get("backlog") == 20 and condition(c).get("status") == "True"),
        "the credential's backlog read again", operator,
    )  # fmt: skip
    assert operator.process.poll() is None


def test_two_tenants_claiming_one_bundle_id_never_share_a_queue_or_a_key(
    noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient, apns_simulator: SimulatorProcess,
    database_url: str, redis_url: str, clean_db: Engine, clean_redis: redis.Redis, tmp_path: Path,
) -> None:  # fmt: skip
    team_a = k8s_namespace
    team_b = unique_name("b", team_a)
    k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=team_b)))
    app = apns_simulator.bundle_id
    tokens = seed_devices(clean_db, app, 10)
    # team-b: the same bundle id, a key of its own that Apple (the simulator) never issued.
    made_up = tmp_path / "made-up.p8"
    made_up.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    running = start_operator(noti_crds, f"{team_a},{team_b}", database_url, redis_url, tmp_path / "operator",
                             NOTI_OPERATOR_LEASE_NAMESPACE=team_a)  # fmt: skip
    senders: list[subprocess.Popen[bytes]] = []
    try:
        wait_until(running.healthy, timeout=60, what=f"/healthz\n{running.tail()}")
        for ns in (team_a, team_b):
            secrets(noti_crds, ns, apns_simulator, database_url, redis_url)
        key = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "apns-key"},
               "stringData": {"AuthKey.p8": made_up.read_text()}}  # fmt: skip
        noti_crds.kubectl("apply", "-n", team_b, "-f", "-", input=json.dumps(key))
        apply_credential(noti_crds, team_a, apns_simulator)
        eventually(lambda: condition(custom(api, team_a, "apnscredentials", "shop"), "Routed").get("reason")
                   == "RouteHeld", "team-a serves the app", running)  # fmt: skip
        apply_credential(noti_crds, team_b, apns_simulator, key_id="MADEUPKEY1")

        # The second claimer reports the conflict, naming the holder; the route stays team-a's.
        conflicted = eventually(
            lambda: custom_if(api, team_b, "apnscredentials", "shop",
                              lambda c: condition(c).get("reason") == "BundleConflict"),
            "team-b not Ready: BundleConflict", running,
        )  # fmt: skip
        assert condition(conflicted)["status"] == "False" and f"{team_a}/shop" in condition(conflicted)["message"]
        assert condition(conflicted, "Routed")["status"] == "False"
        warned = [e for e in events(noti_crds, team_b, "APNsCredential", "shop") if e["reason"] == "BundleConflict"]
        assert warned and warned[0]["type"] == "Warning" and f"{team_a}/shop" in warned[0]["message"]
        assert (
            clean_redis.hget(ROUTES, f"sandbox:{app}")
            == f"{team_a}/shop {apns_simulator.team_id}.{apns_simulator.key_id}".encode()
        )

        # Each tenant's campaign is its own credential's: team-a's is queued on team-a's queue; team-b's waits,
        # saying why, while team-b's credential is in conflict.
        for ns in (team_a, team_b):
            apply_campaign(noti_crds, ns, "sale", ratePerSecond=0)
            eventually(lambda ns=ns: _deployment(k8s.AppsV1Api(api), ns), f"{ns}'s sender Deployment", running)
        queue_a, queue_b = StreamKeys(f"{team_a}/shop"), StreamKeys(f"{team_b}/shop")
        eventually(lambda: clean_redis.xlen(queue_a.campaign_stream(f"{team_a}/sale")) == 10,
                   "team-a's campaign queued on team-a's queue", running)  # fmt: skip
        waiting = eventually(
            lambda: custom_if(api, team_b, "notificationcampaigns", "sale",
                              lambda c: condition(c, "CredentialFound").get("reason") == "BundleConflict"),
            "team-b's campaign waits for its credential", running,
        )  # fmt: skip
        assert waiting["status"]["phase"] == "Pending" and f"{team_a}/shop" in waiting["status"]["message"]
        assert clean_redis.xlen(queue_b.campaign_stream(f"{team_b}/sale")) == 0
        assert noti_crds.process_env("shop-sender", team_b)["NOTI_CREDENTIAL"] == f"{team_b}/shop"
        senders.append(start_sender(noti_crds, team_a, apns_simulator, tmp_path / "a"))
        senders.append(start_sender(noti_crds, team_b, apns_simulator, tmp_path / "b", key_file=made_up))
        noti_crds.kubectl("wait", "-n", team_a, "--for=condition=Complete", "notificationcampaign/sale",
                          "--timeout=90s", timeout=100)  # fmt: skip

        # team-a goes: its route is released, team-b takes it over at its next reconcile, and its campaign
        # goes to team-b's queue, read by team-b's sender, signed with team-b's key (which APNs refuses).
        noti_crds.kubectl("delete", "-n", team_a, "apnscredentials", "shop", "--timeout=30s")
        eventually(lambda: condition(custom(api, team_b, "apnscredentials", "shop"), "Routed").get("reason")
                   == "RouteHeld", "team-b takes the route over", running)  # fmt: skip
        assert (
            clean_redis.hget(ROUTES, f"sandbox:{app}") == f"{team_b}/shop {apns_simulator.team_id}.MADEUPKEY1".encode()
        )
        refused = eventually(
            lambda: custom_if(api, team_b, "apnscredentials", "shop",
                              lambda c: condition(c, "Accepted").get("status") == "False"),
            "team-b's own key refused", running, timeout=90,
        )  # fmt: skip
        assert condition(refused, "Accepted")["reason"] == "InvalidProviderToken"
        with clean_db.connect() as connection:
            rows = connection.execute(select(Notification.campaign, Notification.status, Notification.credential)).all()
        # Nothing of one tenant was sent by the other's sender: team-a's all sent by team-a's (the only key
        # APNs takes), team-b's queued for team-b's credential and none sent.
        assert sorted((r.campaign, r.status, r.credential) for r in rows if r.status == "sent") == [
            (f"{team_a}/sale", "sent", f"{team_a}/shop")
        ] * len(tokens)
        assert {(r.credential, r.status == "sent") for r in rows if r.campaign == f"{team_b}/sale"} == {
            (f"{team_b}/shop", False)
        }
        assert len([r for r in rows if r.campaign == f"{team_b}/sale"]) == len(tokens)
    finally:
        for sender in senders:
            stop_sender(sender)
        stop_operator(running)


# --- LiveActivityChannel: a broadcast channel at APNs (the simulator's channel management listener)


def apply_channel(cluster: KubeCluster, namespace: str, name: str, **spec: Any) -> None:
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LiveActivityChannel",
        "metadata": {"name": name, "labels": {"match": "42"}},
        "spec": {"credentialRef": {"name": "shop"}, **spec},
    }  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def _channel_credential(cluster: KubeCluster, namespace: str, simulator: SimulatorProcess, db: str, rd: str) -> None:
    secrets(cluster, namespace, simulator, db, rd)
    apply_credential(cluster, namespace, simulator)
    patch = json.dumps({"spec": {"channelsEndpoint": simulator.channels_url}})
    cluster.kubectl("patch", "-n", namespace, "apnscredential/shop", "--type=merge", "-p", patch)


def _stored_channels(engine: Engine) -> list[tuple[str, str, int]]:
    from noti.store.models import BroadcastChannel

    with engine.connect() as connection:
        rows = connection.execute(
            select(BroadcastChannel.channel_id, BroadcastChannel.source, BroadcastChannel.storage_policy)
        ).all()
    return [(row.channel_id, row.source, row.storage_policy) for row in rows]


def test_a_live_activity_channel_is_created_at_apns_and_deleted_with_its_resource(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine,
) -> None:  # fmt: skip
    ns = k8s_namespace
    _channel_credential(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_channel(noti_crds, ns, "final", messageStoragePolicy=1)
    noti_crds.kubectl("wait", "-n", ns, "--for=condition=Ready", "liveactivitychannel/final", "--timeout=60s",
                      timeout=70)  # fmt: skip
    channel = custom(api, ns, "liveactivitychannels", "final")
    channel_id = channel["status"]["channelId"]
    assert (channel["status"]["bundleId"], channel["status"]["environment"]) == (apns_simulator.bundle_id, "sandbox")
    assert condition(channel)["reason"] == "Created"
    assert apns_simulator.counters()["channels"]["created"] == 1
    assert _stored_channels(clean_db) == [(channel_id, f"{ns}/final", 1)]
    table = noti_crds.kubectl("get", "liveactivitychannels", "-n", ns).stdout.split()
    assert table[:7] == ["NAME", "CREDENTIAL", "STORAGE", "CHANNEL", "READY", "REASON", "AGE"]
    assert table[7:13] == ["final", "shop", "1", channel_id, "True", "Created"]
    # Apple cannot change a channel's storage policy: neither can the resource.
    refused = noti_crds.kubectl("patch", "-n", ns, "liveactivitychannel/final", "--type=merge", "-p",
                                '{"spec": {"messageStoragePolicy": 0}}', check=False)  # fmt: skip
    assert refused.returncode != 0 and "cannot change" in refused.stderr

    noti_crds.kubectl("delete", "-n", ns, "liveactivitychannel/final", "--timeout=60s", timeout=70)
    assert apns_simulator.counters()["channels"]["deleted"] == 1
    assert _stored_channels(clean_db) == []
    assert "Deleted" in [e["reason"] for e in events(noti_crds, ns, "LiveActivityChannel", "final")]


def test_a_live_activity_channel_without_its_credential_waits_and_its_deletion_does_not_hang(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine,
) -> None:  # fmt: skip
    ns = k8s_namespace
    apply_channel(noti_crds, ns, "early")
    waiting = eventually(
        lambda: custom_if(api, ns, "liveactivitychannels", "early",
                          lambda c: condition(c).get("reason") == "CredentialNotFound"),
        "Ready=False CredentialNotFound", operator,
    )  # fmt: skip
    assert condition(waiting)["status"] == "False"

    _channel_credential(noti_crds, ns, apns_simulator, database_url, redis_url)
    apply_channel(noti_crds, ns, "orphan")
    noti_crds.kubectl("wait", "-n", ns, "--for=condition=Ready", "liveactivitychannel/orphan", "--timeout=60s",
                      timeout=70)  # fmt: skip
    channel_id = custom(api, ns, "liveactivitychannels", "orphan")["status"]["channelId"]
    noti_crds.kubectl("delete", "-n", ns, "apnscredential/shop")
    noti_crds.kubectl("delete", "-n", ns, "liveactivitychannel/orphan", "--timeout=60s", timeout=70)
    left = [e for e in events(noti_crds, ns, "LiveActivityChannel", "orphan") if e["reason"] == "ChannelLeft"]
    assert left and left[0]["type"] == "Warning" and channel_id in left[0]["message"]
    assert "not found" in left[0]["message"] and "BEGIN" not in left[0]["message"]  # no key material in Events
    assert apns_simulator.counters()["channels"]["deleted"] == 0
    noti_crds.kubectl("delete", "-n", ns, "liveactivitychannel/early", "--timeout=60s", timeout=70)


def test_a_campaign_broadcasts_once_to_a_live_activity_channel_and_completes(
    operator: OperatorProcess, noti_crds: KubeCluster, k8s_namespace: str, api: k8s.ApiClient,
    apns_simulator: SimulatorProcess, database_url: str, redis_url: str, clean_db: Engine,
) -> None:  # fmt: skip
    ns = k8s_namespace
    _channel_credential(noti_crds, ns, apns_simulator, database_url, redis_url)
    broadcast = {"channelRef": {"name": "final"}, "contentState": {"home": 3, "away": 1},
                 "alert": {"title": "Full time"}, "event": "end", "priority": 5}  # fmt: skip
    # Devices or a channel, not both: the apiserver says so.
    both = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NotificationCampaign", "metadata": {"name": "both"},
            "spec": {"credentialRef": {"name": "shop"}, "notification": {"title": "x"},
                     "audience": {"allDevices": True}, "broadcast": broadcast}}  # fmt: skip
    refused = noti_crds.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(both), check=False)
    assert refused.returncode != 0 and "give notification and audience" in refused.stderr

    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NotificationCampaign", "metadata": {"name": "full-time"},
                "spec": {"credentialRef": {"name": "shop"}, "broadcast": broadcast}}  # fmt: skip
    noti_crds.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest))
    waiting = eventually(
        lambda: custom_if(api, ns, "notificationcampaigns", "full-time",
                          lambda c: c.get("status", {}).get("phase") == "Pending"),
        "Pending while the channel does not exist", operator,
    )  # fmt: skip
    assert "no channel id yet" in waiting["status"]["message"]
    apply_channel(noti_crds, ns, "final", messageStoragePolicy=1)
    noti_crds.kubectl("wait", "-n", ns, "--for=condition=Complete", "notificationcampaign/full-time", "--timeout=60s",
                      timeout=70)  # fmt: skip
    done = custom(api, ns, "notificationcampaigns", "full-time")
    channel_id = custom(api, ns, "liveactivitychannels", "final")["status"]["channelId"]
    assert (done["status"]["phase"], done["status"]["total"], done["status"]["sent"]) == ("Completed", 1, 1)
    assert done["status"]["channelId"] == channel_id
    assert apns_simulator.counters()["channels"]["by_channel"] == {channel_id: 1}
    with clean_db.connect() as connection:
        rows = connection.execute(
            select(Notification.status, Notification.channel_id, Notification.priority).where(
                Notification.campaign == f"{ns}/full-time"
            )
        ).all()
    assert [(r.status, r.channel_id, r.priority) for r in rows] == [("sent", channel_id, 5)]
