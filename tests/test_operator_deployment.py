"""The sender Deployment and disruption budget of an APNsCredential, one behaviour per test (no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from noti.crd_schema import problems
from noti.operator.credential import CredentialSpec, SenderPodDefaults, crd_default
from noti.operator.deployment import (
    CERT_DIR,
    KEY_DIR,
    SenderImage,
    certificate_fingerprint,
    pool_selector,
    sender_deployment,
    sender_disruption_budget,
)

IMAGE = SenderImage("registry.example/noti:1", "IfNotPresent", "noti-senders", ("regcred",))


def credential(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "noti.dev/v1alpha1", "kind": "APNsCredential",
        "metadata": {"name": "shop", "namespace": "team-a", "uid": "u-1"},
        "spec": {"teamId": "ABCDE12345", "keyId": "KEY1234567", "bundleId": "com.example.shop",
                 "privateKeySecretRef": {"name": "apns-key"}, **spec},
    }  # fmt: skip


def pod(manifest: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return result


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = pod(manifest)["containers"][0]
    return result


def env(manifest: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(manifest)["env"]}


def test_crd_defaults_come_from_the_crd() -> None:
    typed = CredentialSpec.from_spec(credential()["spec"])
    assert typed.environment == crd_default("environment") == "production"
    assert typed.private_key.key == crd_default("privateKeySecretRef", "key") == "AuthKey.p8"
    assert (typed.senders.min_replicas, typed.senders.max_replicas, typed.senders.rate_per_second) == (1, 20, 0)


def test_sets_the_liveness_and_readiness_probes() -> None:
    main = container(sender_deployment(credential(), "SHA256:x", IMAGE))
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_mounts_the_key_read_only_where_the_key_file_points() -> None:
    manifest = sender_deployment(credential(privateKeySecretRef={"name": "k", "key": "Key.p8"}), "SHA256:x", IMAGE)
    volume = next(v for v in pod(manifest)["volumes"] if v["name"] == "apns-key")
    assert volume["secret"] == {"secretName": "k", "items": [{"key": "Key.p8", "path": "Key.p8"}], "defaultMode": 0o440}
    mount = next(m for m in container(manifest)["volumeMounts"] if m["name"] == "apns-key")
    assert mount["readOnly"] is True and env(manifest)["NOTI_APNS_KEY_FILE"] == f"{mount['mountPath']}/Key.p8"


def test_mounts_a_ca_only_when_the_credential_names_one() -> None:
    plain = sender_deployment(credential(), "SHA256:x", IMAGE)
    assert "NOTI_APNS_CA_FILE" not in env(plain) and all(v["name"] != "apns-ca" for v in pod(plain)["volumes"])
    with_ca = sender_deployment(credential(caSecretRef={"name": "ca"}), "SHA256:x", IMAGE)
    assert env(with_ca)["NOTI_APNS_CA_FILE"].endswith("/ca.crt")


def test_passes_the_identity_and_the_pool_settings_as_env() -> None:
    values = env(sender_deployment(credential(environment="sandbox", senders={"ratePerSecond": 50}), "SHA256:x", IMAGE))
    assert values["NOTI_CREDENTIAL"] == "team-a/shop"
    assert (values["NOTI_APNS_TEAM_ID"], values["NOTI_APNS_KEY_ID"]) == ("ABCDE12345", "KEY1234567")
    assert (values["NOTI_APNS_BUNDLE_ID"], values["NOTI_APNS_ENVIRONMENT"]) == ("com.example.shop", "sandbox")
    assert values["NOTI_SENDER_RATE_PER_SECOND"] == "50"


def test_runs_as_non_root_with_no_kubernetes_rights() -> None:
    manifest = sender_deployment(credential(), "SHA256:x", IMAGE)
    assert pod(manifest)["securityContext"]["runAsNonRoot"] is True
    assert container(manifest)["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod(manifest)["automountServiceAccountToken"] is False and pod(manifest)["enableServiceLinks"] is False


def test_a_new_key_fingerprint_rolls_the_pods() -> None:
    first = sender_deployment(credential(), "SHA256:a", IMAGE)["spec"]["template"]
    second = sender_deployment(credential(), "SHA256:b", IMAGE)["spec"]["template"]
    assert first["metadata"]["annotations"] != second["metadata"]["annotations"]


def test_the_credentials_resources_win_over_the_charts_and_the_charts_over_the_built_in() -> None:
    chart = SenderPodDefaults(resources={"requests": {"cpu": "1"}})
    assert container(sender_deployment(credential(), "SHA256:x", IMAGE))["resources"]["requests"]["cpu"] == "250m"
    assert container(sender_deployment(credential(), "SHA256:x", IMAGE, chart))["resources"] == {
        "requests": {"cpu": "1"}
    }
    own = credential(senders={"resources": {"limits": {"memory": "1Gi"}}})
    assert container(sender_deployment(own, "SHA256:x", IMAGE, chart))["resources"] == {"limits": {"memory": "1Gi"}}


def test_schedules_the_pods_where_the_credential_or_the_chart_says() -> None:
    chart = SenderPodDefaults(node_selector={"pool": "push"}, priority_class_name="high",
                              tolerations=[{"key": "push", "operator": "Exists"}])  # fmt: skip
    spec = pod(sender_deployment(credential(), "SHA256:x", IMAGE, chart))
    assert (spec["nodeSelector"], spec["priorityClassName"]) == ({"pool": "push"}, "high")
    assert spec["tolerations"] == [{"key": "push", "operator": "Exists"}]
    own = pod(sender_deployment(credential(senders={"nodeSelector": {"zone": "a"}}), "SHA256:x", IMAGE, chart))
    assert own["nodeSelector"] == {"zone": "a"}
    assert "affinity" not in own and "topologySpreadConstraints" not in own  # nothing set: nothing rendered


def test_spread_constraints_without_a_selector_select_the_pool() -> None:
    chart = SenderPodDefaults(topology_spread_constraints=[
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}])  # fmt: skip
    (spread,) = pod(sender_deployment(credential(), "SHA256:x", IMAGE, chart))["topologySpreadConstraints"]
    assert spread["labelSelector"] == {"matchLabels": pool_selector("shop")}


def test_tuning_becomes_the_senders_settings() -> None:
    chart = SenderPodDefaults.from_env({"NOTI_OPERATOR_SENDER_TUNING": '{"connections": 2, "concurrency": 1000}'})
    own = credential(senders={"tuning": {"concurrency": 300, "batchSize": 100}})
    values = env(sender_deployment(own, "SHA256:x", IMAGE, chart))
    assert (values["NOTI_SENDER_CONNECTIONS"], values["NOTI_SENDER_CONCURRENCY"]) == ("2", "300")
    assert values["NOTI_SENDER_BATCH_SIZE"] == "100"


def test_chart_pod_labels_are_on_the_pods_never_in_the_selector() -> None:
    chart = SenderPodDefaults(pod_labels={"app.kubernetes.io/instance": "noti", "app.kubernetes.io/part-of": "noti"})
    manifest = sender_deployment(credential(), "SHA256:x", IMAGE, chart)
    assert manifest["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "noti"
    assert manifest["spec"]["selector"] == {"matchLabels": pool_selector("shop")}


def test_every_pool_gets_a_disruption_budget_unless_turned_off() -> None:
    budget = sender_disruption_budget(credential())
    assert budget is not None and budget["spec"] == {"maxUnavailable": 1,
                                                     "selector": {"matchLabels": pool_selector("shop")}}  # fmt: skip
    assert budget["metadata"]["name"] == "shop-sender" and budget["metadata"]["namespace"] == "team-a"
    chart = SenderPodDefaults.from_env({"NOTI_OPERATOR_SENDER_POD_DISRUPTION_BUDGET": '{"enabled": true, '
                                        '"maxUnavailable": "25%"}'})  # fmt: skip
    assert sender_disruption_budget(credential(), chart)["spec"]["maxUnavailable"] == "25%"  # type: ignore[index]
    assert sender_disruption_budget(credential(senders={"podDisruptionBudget": {"enabled": False}})) is None


def test_chart_defaults_that_are_not_json_are_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="NOTI_OPERATOR_SENDER_RESOURCES is not JSON"):
        SenderPodDefaults.from_env({"NOTI_OPERATOR_SENDER_RESOURCES": "cpu=1"})


# certificate auth and the proxy

CREDENTIAL_CRD = "apnscredentials.noti.dev.yaml"


def _credential(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "noti.dev/v1alpha1", "kind": "APNsCredential",
        "metadata": {"name": "shop", "namespace": "apps", "uid": "u-1"},
        "spec": {"bundleId": "com.example.shop", "environment": "sandbox", **spec},
    }  # fmt: skip


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = manifest["spec"]["template"]["spec"]["containers"][0]
    return container


def _env(manifest: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in _container(manifest)["env"]}


CERTIFICATE = {"certificateSecretRef": {"name": "shop-cert", "key": "push.p12", "passwordKey": "password"}}


def test_a_certificate_credential_mounts_the_p12_and_reads_its_password_from_the_secret() -> None:
    manifest = sender_deployment(_credential(**CERTIFICATE), "SHA256:x", IMAGE)
    env = _env(manifest)
    assert env["NOTI_APNS_CERT_FILE"] == f"{CERT_DIR}/push.p12"
    assert env["NOTI_APNS_CERT_PASSWORD"] == {"secretKeyRef": {"name": "shop-cert", "key": "password"}}
    assert not {"NOTI_APNS_KEY_FILE", "NOTI_APNS_KEY_ID", "NOTI_APNS_TEAM_ID"} & set(env)
    volume = manifest["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == "shop-cert"
    assert volume["secret"]["items"] == [{"key": "push.p12", "path": "push.p12"}]  # the password is not a file
    assert {"name": "apns-key", "mountPath": CERT_DIR, "readOnly": True} in _container(manifest)["volumeMounts"]


def test_a_certificate_without_a_password_key_sets_no_password() -> None:
    manifest = sender_deployment(_credential(certificateSecretRef={"name": "shop-cert"}), "SHA256:x", IMAGE)
    env = _env(manifest)
    assert env["NOTI_APNS_CERT_FILE"] == f"{CERT_DIR}/apns.p12" and "NOTI_APNS_CERT_PASSWORD" not in env


def test_a_key_credential_still_mounts_the_key_with_team_and_key_id() -> None:
    spec = {"teamId": "ABCDE12345", "keyId": "KEY1234567", "privateKeySecretRef": {"name": "shop-key"}}
    env = _env(sender_deployment(_credential(**spec), "SHA256:x", IMAGE))
    assert (env["NOTI_APNS_KEY_FILE"], env["NOTI_APNS_KEY_ID"], env["NOTI_APNS_TEAM_ID"]) == (
        f"{KEY_DIR}/AuthKey.p8", "KEY1234567", "ABCDE12345",
    )  # fmt: skip
    assert "NOTI_APNS_CERT_FILE" not in env


def test_the_proxy_reaches_the_senders_as_noti_apns_proxy() -> None:
    manifest = sender_deployment(_credential(proxy="http://proxy.corp:3128", **CERTIFICATE), "SHA256:x", IMAGE)
    assert _env(manifest)["NOTI_APNS_PROXY"] == "http://proxy.corp:3128"
    assert "NOTI_APNS_PROXY" not in _env(sender_deployment(_credential(**CERTIFICATE), "SHA256:x", IMAGE))


def test_the_crd_takes_certificate_auth_and_a_proxy() -> None:
    assert problems(_credential(proxy="http://proxy.corp:3128", **CERTIFICATE), CREDENTIAL_CRD, "v1alpha1") == []
    assert problems(_credential(proxy="https://proxy.corp", **CERTIFICATE), CREDENTIAL_CRD, "v1alpha1") != []


def test_a_new_certificate_has_a_new_fingerprint_so_the_senders_roll() -> None:
    assert certificate_fingerprint(b"one") != certificate_fingerprint(b"two")
    assert certificate_fingerprint(b"one").startswith("SHA256:")
