"""The test control plane: the project's CRDs are served, validated and watched, and RBAC holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch

from harness.k8s import REPO, KubeCluster, versions

GROUP, VERSION, PLURAL = "noti.dev", "v1alpha1", "notificationcampaigns"


def campaign(name: str, audience: dict[str, object]) -> str:
    return yaml.safe_dump({
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NotificationCampaign",
        "metadata": {"name": name},
        "spec": {"credentialRef": {"name": "my-app"}, "notification": {"title": "Hi", "body": "Sale"},
                 "audience": audience},
    })  # fmt: skip


def credential(name: str, **spec: object) -> str:
    base = {"teamId": "ABCDE12345", "keyId": "KEY1234567", "bundleId": "com.example.app",
            "environment": "sandbox", "privateKeySecretRef": {"name": "apns-key", "key": "AuthKey.p8"}}  # fmt: skip
    return yaml.safe_dump({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "APNsCredential", "metadata": {"name": name},
        "spec": {**base, **spec},
    })  # fmt: skip


@pytest.fixture
def cluster(noti_crds: KubeCluster) -> KubeCluster:
    """The session cluster with the project's CRDs applied and established."""
    return noti_crds


@pytest.fixture
def custom(cluster: KubeCluster) -> Iterator[k8s.CustomObjectsApi]:
    api = cluster.api_client()
    yield k8s.CustomObjectsApi(api)
    api.close()


def test_default_namespace_exists_and_server_reports_pinned_version(k8s_cluster: KubeCluster) -> None:
    namespaces = k8s_cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in namespaces
    server = json.loads(k8s_cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == versions()["KUBE_VERSION"]


def test_project_crds_are_established_with_printer_columns(cluster: KubeCluster, k8s_namespace: str) -> None:
    cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=campaign("spring", {"allDevices": True}))
    table = cluster.kubectl("get", "-n", k8s_namespace, "notificationcampaigns").stdout
    assert table.split()[:7] == ["NAME", "PHASE", "SENT", "TOTAL", "FAILED", "INVALID", "AGE"]
    assert "spring" in table


def test_campaign_is_stored_with_defaults_and_watched(
    cluster: KubeCluster, custom: k8s.CustomObjectsApi, k8s_namespace: str
) -> None:
    listed = cast(dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL))
    since = listed["metadata"]["resourceVersion"]
    cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=campaign("winter", {"tags": ["beta"]}))
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, k8s_namespace, PLURAL, "winter", {"status": {"phase": "Running"}}
    )

    events = []
    stream = watch.Watch().stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, k8s_namespace, PLURAL,
        resource_version=since, timeout_seconds=15,
    )  # fmt: skip
    for event in stream:
        events.append((event["type"], event["object"]))
        if len(events) == 2:
            break

    (added_type, added), (modified_type, modified) = events
    assert added_type == "ADDED"
    assert added["spec"]["notification"]["pushType"] == "alert"  # schema defaults applied
    assert added["spec"]["ratePerSecond"] == 1000
    assert modified_type == "MODIFIED"
    assert modified["status"]["phase"] == "Running"


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (campaign("two-audiences", {"allDevices": True, "tags": ["beta"]}),
         "audience needs exactly one of allDevices, owners, tags, deviceTokens"),
        (campaign("no-audience", {}), "audience needs exactly one of allDevices, owners, tags, deviceTokens"),
        (credential("inverted", senders={"minReplicas": 5, "maxReplicas": 2}),
         "senders.minReplicas must not exceed senders.maxReplicas"),
        (credential("bad-team", teamId="abc"), "spec.teamId: Invalid value"),
        (credential("key-and-cert", certificateSecretRef={"name": "apns-cert"}),
         "give privateKeySecretRef (token auth) or certificateSecretRef (certificate auth), one of them"),
        (credential("https-proxy", proxy="https://proxy.corp:3128"), "spec.proxy: Invalid value"),
    ],
    ids=["two-audiences", "no-audience", "inverted-senders", "bad-team-id", "key-and-certificate", "https-proxy"],
)  # fmt: skip
def test_object_breaking_the_schema_is_rejected_with_its_message(
    cluster: KubeCluster, k8s_namespace: str, manifest: str, message: str
) -> None:
    result = cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    assert "is invalid" in result.stderr
    assert message in result.stderr


def test_a_certificate_credential_needs_no_team_or_key_id(cluster: KubeCluster, k8s_namespace: str) -> None:
    manifest = yaml.safe_dump({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "APNsCredential", "metadata": {"name": "by-certificate"},
        "spec": {"bundleId": "com.example.app", "proxy": "http://proxy.corp:3128",
                 "certificateSecretRef": {"name": "apns-cert", "passwordKey": "password"}},
    })  # fmt: skip
    cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=manifest)
    stored = json.loads(cluster.kubectl("get", "-n", k8s_namespace, "apnscredential", "by-certificate", "-o",
                                        "json").stdout)  # fmt: skip
    assert stored["spec"]["certificateSecretRef"] == {"name": "apns-cert", "key": "apns.p12", "passwordKey": "password"}


def test_service_account_without_rights_is_forbidden(k8s_cluster: KubeCluster, k8s_namespace: str) -> None:
    user = f"system:serviceaccount:{k8s_namespace}:nobody"
    token = k8s_cluster.service_account_token("nobody", k8s_namespace)
    impersonated, by_token = k8s_cluster.api_client(as_user=user), k8s_cluster.api_client(token=token)
    try:
        for api in (impersonated, by_token):
            with pytest.raises(k8s.ApiException) as refused:
                k8s.CoreV1Api(api).list_namespaced_secret(k8s_namespace)
            assert refused.value.status == 403
            message = json.loads(refused.value.body or "{}").get("message", "")
            assert f'User "{user}" cannot list resource "secrets"' in message

        review = k8s.AuthenticationV1Api(by_token).create_self_subject_review(k8s.V1SelfSubjectReview())
        assert review.status is not None and review.status.user_info is not None
        assert review.status.user_info.username == user

        k8s_cluster.kubectl("create", "role", "read-secrets", "-n", k8s_namespace, "--verb=list", "--resource=secrets")
        k8s_cluster.kubectl(
            "create", "rolebinding", "nobody-reads", "-n", k8s_namespace, "--role=read-secrets",
            f"--serviceaccount={k8s_namespace}:nobody",
        )  # fmt: skip
        assert k8s.CoreV1Api(by_token).list_namespaced_secret(k8s_namespace).items == []
    finally:
        impersonated.close()
        by_token.close()

    denied = k8s_cluster.kubectl("get", "pods", "-n", k8s_namespace, as_user=user, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr


WORKER = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: worker}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {NOTI_LOG_LEVEL: debug}
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {url: "postgresql://x"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker}
spec:
  replicas: 2
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      serviceAccountName: worker
      containers:
        - name: main
          image: noti:dev
          envFrom: [{configMapRef: {name: settings}}]
          env:
            - {name: NOTI_DATABASE_URL, valueFrom: {secretKeyRef: {name: db, key: url}}}
            - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: GREETING, value: "level $(NOTI_LOG_LEVEL)"}
"""


def test_deployment_is_stored_but_runs_no_pods_and_its_env_resolves(
    k8s_cluster: KubeCluster, k8s_namespace: str
) -> None:
    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=WORKER)

    env = k8s_cluster.process_env("worker", k8s_namespace)

    assert env["NOTI_LOG_LEVEL"] == "debug"
    assert env["NOTI_DATABASE_URL"] == "postgresql://x"
    assert env["POD_NAMESPACE"] == k8s_namespace
    assert env["GREETING"] == "level debug"
    whoami = k8s_cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}",
                                 kubeconfig=Path(env["KUBECONFIG"])).stdout  # fmt: skip
    assert whoami == f"system:serviceaccount:{k8s_namespace}:worker"
    assert k8s_cluster.kubectl("get", "pods", "-n", k8s_namespace, "-o", "name").stdout == ""


def test_helm_installs_a_chart_into_the_cluster(k8s_cluster: KubeCluster, k8s_namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "hello"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: hello\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-greeting'}\ndata: {hello: world}\n"
    )

    k8s_cluster.helm("install", "greet", str(chart), "--namespace", k8s_namespace, "--wait", "--timeout=60s")

    data = k8s_cluster.kubectl("get", "configmap", "greet-greeting", "-n", k8s_namespace, "-o", "jsonpath={.data}")
    assert json.loads(data.stdout) == {"hello": "world"}
    assert "greet" in k8s_cluster.helm("list", "--namespace", k8s_namespace, "--short").stdout.split()


def test_the_examples_are_valid_resources(cluster: KubeCluster, k8s_namespace: str) -> None:
    resources = [p for p in sorted((REPO / "examples").glob("*.yaml")) if "kind" in yaml.safe_load(p.read_text())]
    assert {p.name for p in resources} >= {"apnscredential.yaml", "campaign.yaml"}  # values-*.yaml are helm values
    for path in resources:
        manifest = yaml.safe_load(path.read_text())
        manifest["metadata"]["namespace"] = k8s_namespace
        result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest))
        assert "(server dry run)" in result.stdout, path.name
