"""The sender Deployment an APNsCredential becomes: certificate auth and the proxy (a pure manifest builder)."""

from __future__ import annotations

from typing import Any

from noti.crd_schema import problems
from noti.operator.deployment import CERT_DIR, KEY_DIR, SenderImage, certificate_fingerprint, sender_deployment

CRD_FILE = "apnscredentials.noti.dev.yaml"
IMAGE = SenderImage("noti:test")


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
    assert problems(_credential(proxy="http://proxy.corp:3128", **CERTIFICATE), CRD_FILE, "v1alpha1") == []
    assert problems(_credential(proxy="https://proxy.corp", **CERTIFICATE), CRD_FILE, "v1alpha1") != []


def test_a_new_certificate_has_a_new_fingerprint_so_the_senders_roll() -> None:
    assert certificate_fingerprint(b"one") != certificate_fingerprint(b"two")
    assert certificate_fingerprint(b"one").startswith("SHA256:")
