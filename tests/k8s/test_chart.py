"""The Helm chart: it renders, installs into a real kube-apiserver, and grants the operator no more than it needs."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.k8s import REPO, KubeCluster, unique_name
from harness.procs import wait_until
from noti import __version__
from noti.settings import Settings

CHART = REPO / "charts" / "noti"
DATABASE_URL = "postgresql+psycopg://noti:s3cret@postgres.db:5432/noti"
REDIS_URL = "redis://redis.db:6379/0"
URLS = ("--set", f"database.url={DATABASE_URL}", "--set", f"redis.url={REDIS_URL}")
IMAGE = f"noti:{__version__}"
HELM_DEFAULT_TIMEOUT = 300
EXAMPLES = REPO / "examples"

# The operator's rights, in every watched namespace: what its code uses, nothing more (least privilege).
NAMESPACED_RULES = [
    {"apiGroups": ["noti.dev"], "resources": ["apnscredentials", "notificationcampaigns", "liveactivitychannels"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["noti.dev"],
     "resources": ["apnscredentials/status", "notificationcampaigns/status", "liveactivitychannels/status"],
     "verbs": ["patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]  # fmt: skip
# ... and, watching every namespace, what kopf needs to observe namespaces and CRDs.
CLUSTER_ONLY_RULES = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
]  # fmt: skip

# (verb, resource, subresource) the operator needs in a watched namespace, and some it must not have.
OPERATOR_MAY = [
    ("patch", "notificationcampaigns", "status"),
    ("patch", "apnscredentials", "status"),
    ("watch", "notificationcampaigns", ""),
    ("patch", "apnscredentials", ""),
    ("patch", "liveactivitychannels", "status"),
    ("watch", "liveactivitychannels", ""),
    ("create", "deployments", ""),
    ("patch", "deployments", ""),
    ("patch", "poddisruptionbudgets.policy", ""),
    ("get", "secrets", ""),
    ("create", "events", ""),
]
OPERATOR_MAY_NOT = [
    ("list", "secrets", ""),  # every Secret of the namespace, kube-system's too when cluster-wide
    ("watch", "secrets", ""),
    ("delete", "secrets", ""),
    ("create", "secrets", ""),
    ("delete", "deployments", ""),  # garbage collection removes a credential's Deployment, not the operator
    ("update", "deployments", ""),
    ("create", "pods", ""),
    ("list", "configmaps", ""),
    ("create", "notificationcampaigns", ""),
    ("delete", "apnscredentials", ""),
    ("update", "apnscredentials", "status"),
    ("create", "deployments", "scale"),
    ("create", "rolebindings", ""),
]


# --- helpers ------------------------------------------------------------------------------------


def render(cluster: KubeCluster, *args: str, namespace: str = "noti") -> list[dict[str, Any]]:
    """The chart's manifests as ``helm template`` renders them (hooks included)."""
    result = cluster.helm("template", "noti", str(CHART), "--namespace", namespace, *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def install(cluster: KubeCluster, release: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``helm install`` without hooks: the migration Job would wait for a pod that never runs here."""
    return cluster.helm("install", release, str(CHART), "--namespace", namespace, "--no-hooks", *args)


def get(cluster: KubeCluster, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    scope = ("--namespace", namespace) if namespace else ()
    return dict(json.loads(cluster.kubectl("get", kind, name, *scope, "--output=json").stdout))


def exists(cluster: KubeCluster, kind: str, name: str, namespace: str | None = None) -> bool:
    scope = ("--namespace", namespace) if namespace else ()
    result = cluster.kubectl("get", kind, name, *scope, "--ignore-not-found", "--output=name")
    return bool(result.stdout.strip())


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_values(container: dict[str, Any]) -> dict[str, str]:
    # The apiserver drops empty values: an env var with neither value nor valueFrom is "".
    return {var["name"]: var.get("value", "") for var in container.get("env", []) if "valueFrom" not in var}


def can_i(cluster: KubeCluster, user: str, verb: str, resource: str, namespace: str | None,
          subresource: str = "") -> bool:  # fmt: skip
    """``kubectl auth can-i`` as ``user`` in ``namespace``, or across all namespaces when None."""
    scope = ("--namespace", namespace) if namespace else ("--all-namespaces",)
    extra = (f"--subresource={subresource}",) if subresource else ()
    result = cluster.kubectl("auth", "can-i", verb, resource, *scope, *extra, as_user=user, check=False)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"kubectl auth can-i {verb} {resource} failed: {result.stderr}")  # 1 is "no"
    return result.returncode == 0


def create_namespace(cluster: KubeCluster, seed: str) -> str:
    """One more fresh namespace, named after ``seed`` (never deleted, like ``k8s_namespace``)."""
    name = unique_name("t", seed)
    cluster.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def other_namespace(k8s_cluster: KubeCluster, request: pytest.FixtureRequest) -> str:
    """A second fresh namespace for the test."""
    return create_namespace(k8s_cluster, request.node.nodeid + "#other")


def noti_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What Noti's settings make of ``env`` (a pod's environment) and nothing else."""
    for key in [key for key in os.environ if key.startswith("NOTI_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


# --- rendering ----------------------------------------------------------------------------------


def test_chart_app_version_is_the_noti_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "noti"
    assert chart["appVersion"] == __version__


def test_chart_crds_are_byte_copies_of_the_crds_folder() -> None:
    sources = {path.name: path.read_bytes() for path in (REPO / "crds").glob("*.yaml")}
    shipped = {path.name: path.read_bytes() for path in (CHART / "crds").glob("*.yaml")}
    assert sources, "no CRDs in crds/"
    assert sorted(shipped) == sorted(sources), "charts/noti/crds/ must hold exactly the files of crds/"
    drifted = [name for name in sources if shipped[name] != sources[name]]
    assert not drifted, f"charts/noti/crds/ drifted from crds/ ({drifted}): cp crds/*.yaml charts/noti/crds/"


def test_lint_passes_with_urls_or_an_existing_secret(k8s_cluster: KubeCluster) -> None:
    for values in (URLS, ("--set", "existingSecret=noti-env")):
        result = k8s_cluster.helm("lint", str(CHART), "--strict", *values)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((), "noti: set database.url (e.g. postgresql+psycopg://user:pass@host:5432/noti) or existingSecret"),
        (("--set", f"database.url={DATABASE_URL}"), "noti: set redis.url (e.g. redis://host:6379/0) or existingSecret"),
        ((*URLS, "--set", "operator.watchNamespaces=team-a"), "at '/operator/watchNamespaces': got string, want array"),
    ],
    ids=["no-database", "no-redis", "namespaces-not-a-list"],
)
def test_rendering_fails_with_what_to_set(k8s_cluster: KubeCluster, values: tuple[str, ...], message: str) -> None:
    result = k8s_cluster.helm("template", "noti", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook_with_its_secret_created_first(
    k8s_cluster: KubeCluster,
) -> None:
    manifests = render(k8s_cluster, *URLS)
    job = find(manifests, "Job", "noti-migrations")
    secret = find(manifests, "Secret", "noti-migrations")

    hook = job["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    (migrate,) = pod["containers"]
    assert migrate["image"] == IMAGE
    assert migrate["args"] == ["migrate"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert migrate["envFrom"] == [{"secretRef": {"name": "noti-migrations"}}]

    # The Job's Secret lives and dies with it: same events, weight and delete policy (helm creates
    # Secrets before Jobs of one weight), deleted whether the Job succeeds or fails.
    annotations = secret["metadata"]["annotations"]
    for key in ("helm.sh/hook", "helm.sh/hook-weight", "helm.sh/hook-delete-policy"):
        assert annotations[key] == hook[key], key
    assert hook["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded,hook-failed"
    assert hook["helm.sh/hook-output-log-policy"] == "hook-failed"
    # The Job fails on its own before helm's default --timeout (300 s) gives up on it.
    assert job["spec"]["activeDeadlineSeconds"] < HELM_DEFAULT_TIMEOUT
    assert "helm.sh/resource-policy" not in annotations
    assert secret_data(secret) == {"NOTI_DATABASE_URL": DATABASE_URL}
    # The connections Secret stays an ordinary release resource.
    assert "annotations" not in find(manifests, "Secret", "noti-connections")["metadata"]

    with_existing = render(k8s_cluster, "--set", "existingSecret=noti-env")
    assert [m["metadata"]["name"] for m in with_existing if m["kind"] == "Secret"] == []
    (migrate,) = find(with_existing, "Job", "noti-migrations")["spec"]["template"]["spec"]["containers"]
    assert migrate["envFrom"] == [{"secretRef": {"name": "noti-env"}}]

    disabled = render(k8s_cluster, *URLS, "--set", "migrations.enabled=false")
    assert not [m for m in disabled if m["kind"] == "Job" or m["metadata"]["name"] == "noti-migrations"]


def test_ingress_is_off_by_default_and_routes_to_the_gateway_service(
    k8s_cluster: KubeCluster, k8s_namespace: str
) -> None:
    assert not [m for m in render(k8s_cluster, *URLS) if m["kind"] == "Ingress"]

    manifests = render(
        k8s_cluster, *URLS, "--set", "gateway.ingress.enabled=true", "--set", "gateway.ingress.className=nginx",
        "--set", "gateway.ingress.hosts[0].host=push.example.com",
        "--set", "gateway.ingress.hosts[0].paths[0].path=/",
        namespace=k8s_namespace,
    )  # fmt: skip
    ingress = find(manifests, "Ingress", "noti-gateway")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "push.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "noti-gateway", "port": {"name": "http"}}
    service = find(manifests, "Service", "noti-gateway")
    assert [port["name"] for port in service["spec"]["ports"]] == ["http"]
    # The apiserver accepts it as rendered.
    k8s_cluster.kubectl("apply", "--dry-run=server", "--filename=-", input=yaml.safe_dump(ingress))


# --- installing ---------------------------------------------------------------------------------


def test_install_creates_gateway_operator_and_their_secret(k8s_cluster: KubeCluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    result = install(k8s_cluster, "noti", ns, *URLS)

    # NOTES tell how to get an API key and reach the gateway.
    assert f"kubectl --namespace {ns} exec deploy/noti-gateway -- \\" in result.stdout
    assert "noti apikey create --name admin --scopes send,read,admin" in result.stdout
    assert f"kubectl --namespace {ns} port-forward svc/noti-gateway 8000:80" in result.stdout
    for crd in ("apnscredentials.noti.dev", "notificationcampaigns.noti.dev", "liveactivitychannels.noti.dev"):
        assert exists(k8s_cluster, "customresourcedefinition", crd)

    secret = get(k8s_cluster, "secret", "noti-connections", ns)
    data = secret_data(secret)
    assert data["NOTI_DATABASE_URL"] == DATABASE_URL
    assert data["NOTI_REDIS_URL"] == REDIS_URL
    assert len(data["NOTI_GATEWAY_SESSION_SECRET"]) >= 32
    # Senders get a Secret of their own: the URLs, not the gateway's session secret.
    senders = secret_data(get(k8s_cluster, "secret", "noti-senders", ns))
    assert senders == {"NOTI_DATABASE_URL": DATABASE_URL, "NOTI_REDIS_URL": REDIS_URL}

    gateway = get(k8s_cluster, "deployment", "noti-gateway", ns)
    pod = gateway["spec"]["template"]["spec"]
    main = container(gateway)
    assert gateway["spec"]["replicas"] == 2
    assert main["image"] == IMAGE
    assert main["args"] == ["gateway"]
    assert main["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTP"}
    assert main["envFrom"] == [{"secretRef": {"name": "noti-connections"}}]
    assert pod["automountServiceAccountToken"] is False
    # Service links would put NOTI_GATEWAY_PORT=tcp://... (from the noti-gateway Service) in every pod.
    assert pod["enableServiceLinks"] is False
    assert "checksum/connections" in gateway["spec"]["template"]["metadata"]["annotations"]

    service = get(k8s_cluster, "service", "noti-gateway", ns)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= gateway["spec"]["template"]["metadata"]["labels"].items()

    operator = get(k8s_cluster, "deployment", "noti-operator", ns)
    spec, pod, main = operator["spec"], operator["spec"]["template"]["spec"], container(operator)
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "RollingUpdate"  # the new pod waits for the Lease: never two acting
    assert pod["serviceAccountName"] == "noti-operator"
    assert exists(k8s_cluster, "serviceaccount", "noti-operator", ns)
    assert main["args"] == ["operator"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health", "scheme": "HTTP"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in main["ports"]
    assert main["envFrom"] == [{"secretRef": {"name": "noti-connections"}}]
    assert {
        "NOTI_OPERATOR_NAMESPACES": "",
        "NOTI_OPERATOR_SENDER_IMAGE": IMAGE,
        "NOTI_OPERATOR_SENDER_IMAGE_PULL_POLICY": "IfNotPresent",
        "NOTI_OPERATOR_SENDER_ENV_SECRET": "noti-senders",
        "NOTI_OPERATOR_HEALTH_PORT": "8080",
    }.items() <= env_values(main).items()
    assert gateway["spec"]["selector"] != spec["selector"]

    # Every container runs as the image's unprivileged user with nothing to spare.
    for deployment in (gateway, operator):
        template = deployment["spec"]["template"]
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        context = container(deployment)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by"):  # fmt: skip
            assert key in deployment["metadata"]["labels"]
            assert key in template["metadata"]["labels"]
        assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == __version__


def test_each_component_gets_valid_noti_settings_from_the_chart(
    k8s_cluster: KubeCluster, k8s_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(
        k8s_cluster, "noti", k8s_namespace, *URLS, "--set", "gateway.rateLimit=50", "--set", "gateway.workers=4",
        "--set", "operator.scaleDownSeconds=120", "--set", "logLevel=DEBUG",
    )  # fmt: skip

    gateway_env = k8s_cluster.process_env("noti-gateway", k8s_namespace)
    operator_env = k8s_cluster.process_env("noti-operator", k8s_namespace)

    assert gateway_env["NOTI_DATABASE_URL"] == operator_env["NOTI_DATABASE_URL"] == DATABASE_URL
    assert gateway_env["NOTI_REDIS_URL"] == operator_env["NOTI_REDIS_URL"] == REDIS_URL
    gateway = noti_settings(gateway_env, monkeypatch)
    assert (gateway.gateway_port, gateway.gateway_workers, gateway.gateway_rate_limit) == (8000, 4, 50.0)
    assert gateway.gateway_session_secret
    assert gateway.log_level == "DEBUG"

    operator = noti_settings(operator_env, monkeypatch)
    assert operator.operator_sender_env_secret == "noti-senders"
    assert operator.operator_scale_down_seconds == 120.0
    assert operator.operator_health_port == 8080

    # The operator's own account can read the custom resources everywhere, and nothing else of note.
    as_operator = k8s_cluster.kubectl("get", "notificationcampaigns", "--all-namespaces",
                                      kubeconfig=Path(operator_env["KUBECONFIG"]), check=False)  # fmt: skip
    assert as_operator.returncode == 0, as_operator.stderr
    pods = k8s_cluster.kubectl("get", "pods", kubeconfig=Path(operator_env["KUBECONFIG"]), check=False)
    assert "Forbidden" in pods.stderr


def test_existing_secret_is_used_everywhere_and_none_is_created(k8s_cluster: KubeCluster, k8s_namespace: str) -> None:
    k8s_cluster.kubectl(
        "create", "secret", "generic", "noti-env", "--namespace", k8s_namespace,
        f"--from-literal=NOTI_DATABASE_URL={DATABASE_URL}", f"--from-literal=NOTI_REDIS_URL={REDIS_URL}",
        "--from-literal=NOTI_GATEWAY_SESSION_SECRET=mine",
    )  # fmt: skip

    install(k8s_cluster, "noti", k8s_namespace, "--set", "existingSecret=noti-env")

    manifest = k8s_cluster.helm("get", "manifest", "noti", "--namespace", k8s_namespace).stdout
    assert [doc for doc in yaml.safe_load_all(manifest) if doc and doc["kind"] == "Secret"] == []
    assert not exists(k8s_cluster, "secret", "noti-connections", k8s_namespace)
    env = k8s_cluster.process_env("noti-gateway", k8s_namespace)
    assert (env["NOTI_DATABASE_URL"], env["NOTI_REDIS_URL"]) == (DATABASE_URL, REDIS_URL)
    assert env["NOTI_GATEWAY_SESSION_SECRET"] == "mine"
    operator = container(get(k8s_cluster, "deployment", "noti-operator", k8s_namespace))
    assert operator["envFrom"] == [{"secretRef": {"name": "noti-env"}}]
    assert env_values(operator)["NOTI_OPERATOR_SENDER_ENV_SECRET"] == "noti-env"


def test_upgrade_keeps_the_generated_session_secret(k8s_cluster: KubeCluster, k8s_namespace: str) -> None:
    install(k8s_cluster, "noti", k8s_namespace, *URLS)
    first = secret_data(get(k8s_cluster, "secret", "noti-connections", k8s_namespace))
    checksum = get(k8s_cluster, "deployment", "noti-gateway", k8s_namespace)["spec"]["template"]["metadata"][
        "annotations"
    ]["checksum/connections"]

    upgrade = ("upgrade", "noti", str(CHART), "--namespace", k8s_namespace, "--no-hooks")
    k8s_cluster.helm(*upgrade, *URLS, "--set", "gateway.replicas=3")

    second = secret_data(get(k8s_cluster, "secret", "noti-connections", k8s_namespace))
    gateway = get(k8s_cluster, "deployment", "noti-gateway", k8s_namespace)
    assert gateway["spec"]["replicas"] == 3
    assert second["NOTI_GATEWAY_SESSION_SECRET"] == first["NOTI_GATEWAY_SESSION_SECRET"]
    assert gateway["spec"]["template"]["metadata"]["annotations"]["checksum/connections"] == checksum

    # New connection settings reach the Secret and roll the pods; the session secret still holds.
    k8s_cluster.helm(*upgrade, "--set", "database.url=postgresql+psycopg://noti:new@db2:5432/noti",
                     "--set", f"redis.url={REDIS_URL}")  # fmt: skip
    third = secret_data(get(k8s_cluster, "secret", "noti-connections", k8s_namespace))
    assert third["NOTI_DATABASE_URL"] == "postgresql+psycopg://noti:new@db2:5432/noti"
    assert third["NOTI_GATEWAY_SESSION_SECRET"] == first["NOTI_GATEWAY_SESSION_SECRET"]
    rolled = get(k8s_cluster, "deployment", "noti-gateway", k8s_namespace)["spec"]["template"]["metadata"]
    assert rolled["annotations"]["checksum/connections"] != checksum

    k8s_cluster.helm(*upgrade, *URLS, "--set", "gateway.sessionSecret=chosen")
    assert (
        secret_data(get(k8s_cluster, "secret", "noti-connections", k8s_namespace))["NOTI_GATEWAY_SESSION_SECRET"]
        == "chosen"
    )


def test_migrations_run_before_the_release_with_the_database_url(k8s_cluster: KubeCluster, k8s_namespace: str) -> None:
    """A full install, hooks included: the Job is completed by hand, as no kubelet runs its pod here."""
    ns = k8s_namespace
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}

    def helm_install() -> None:
        outcome["install"] = k8s_cluster.helm(
            "install", "noti", str(CHART), "--namespace", ns, *URLS, "--timeout=60s", check=False
        )

    installing = threading.Thread(target=helm_install)
    installing.start()
    try:
        wait_until(lambda: exists(k8s_cluster, "job", "noti-migrations", ns), timeout=30, what="migration Job",
                   interval=0.1)  # fmt: skip
        job = get(k8s_cluster, "job", "noti-migrations", ns)
        (migrate,) = job["spec"]["template"]["spec"]["containers"]
        assert migrate["args"] == ["migrate"]
        # While the hook runs, the Secret it reads exists and the release's resources do not yet.
        (source,) = migrate["envFrom"]
        secret = secret_data(get(k8s_cluster, "secret", source["secretRef"]["name"], ns))
        assert secret["NOTI_DATABASE_URL"] == DATABASE_URL
        assert not exists(k8s_cluster, "deployment", "noti-gateway", ns)
        assert not exists(k8s_cluster, "secret", "noti-connections", ns)

        _complete_job(k8s_cluster, "noti-migrations", ns, failed=False)
    finally:
        installing.join(timeout=120)

    assert outcome["install"].returncode == 0, outcome["install"].stderr
    assert "STATUS: deployed" in outcome["install"].stdout
    assert exists(k8s_cluster, "deployment", "noti-gateway", ns)
    assert exists(k8s_cluster, "secret", "noti-connections", ns)
    # Succeeded hooks are cleaned up: no Job, and no second copy of the database URL left behind.
    assert not exists(k8s_cluster, "job", "noti-migrations", ns)
    assert not exists(k8s_cluster, "secret", "noti-migrations", ns)


# --- RBAC ---------------------------------------------------------------------------------------


def test_operator_watching_all_namespaces_has_cluster_role_with_least_privilege(
    k8s_cluster: KubeCluster, k8s_namespace: str, other_namespace: str
) -> None:
    install(k8s_cluster, "noti-all", k8s_namespace, *URLS)
    name = f"{k8s_namespace}-noti-all-operator"
    user = f"system:serviceaccount:{k8s_namespace}:noti-all-operator"

    assert get(k8s_cluster, "clusterrole", name)["rules"] == NAMESPACED_RULES + CLUSTER_ONLY_RULES
    binding = get(k8s_cluster, "clusterrolebinding", name)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "noti-all-operator", "namespace": k8s_namespace}]
    operator = container(get(k8s_cluster, "deployment", "noti-all-operator", k8s_namespace))
    assert env_values(operator)["NOTI_OPERATOR_NAMESPACES"] == ""

    for namespace in (k8s_namespace, other_namespace):
        for verb, resource, subresource in OPERATOR_MAY:
            assert can_i(k8s_cluster, user, verb, resource, namespace, subresource), (verb, resource, subresource)
        for verb, resource, subresource in OPERATOR_MAY_NOT:
            assert not can_i(k8s_cluster, user, verb, resource, namespace, subresource), (verb, resource)
    assert can_i(k8s_cluster, user, "list", "deployments", None) is False
    assert can_i(k8s_cluster, user, "list", "secrets", None) is False
    assert can_i(k8s_cluster, user, "get", "secrets", "kube-system") is True  # by name only, never listed
    assert can_i(k8s_cluster, user, "watch", "namespaces", None) is True
    # The Lease one operator holds while it leads, in the release namespace only.
    lease = ("leases.coordination.k8s.io", k8s_namespace)
    assert can_i(k8s_cluster, user, "create", *lease) is True
    assert can_i(k8s_cluster, user, "update", "leases.coordination.k8s.io/noti-operator", k8s_namespace) is True
    assert can_i(k8s_cluster, user, "update", "leases.coordination.k8s.io/other", k8s_namespace) is False
    assert can_i(k8s_cluster, user, "create", "leases.coordination.k8s.io", other_namespace) is False
    assert can_i(k8s_cluster, user, "list", "customresourcedefinitions.apiextensions.k8s.io", None) is True
    assert can_i(k8s_cluster, user, "delete", "namespaces", None) is False
    assert can_i(k8s_cluster, user, "create", "clusterrolebindings", None) is False


def test_operator_watching_listed_namespaces_gets_roles_there_only(
    k8s_cluster: KubeCluster, k8s_namespace: str, other_namespace: str, request: pytest.FixtureRequest
) -> None:
    unwatched = create_namespace(k8s_cluster, request.node.nodeid + "#unwatched")
    release, ns = "noti-scoped", k8s_namespace
    user = f"system:serviceaccount:{ns}:noti-scoped-operator"

    install(k8s_cluster, release, ns, *URLS, "--set", f"operator.watchNamespaces={{{ns},{other_namespace}}}")

    operator = container(get(k8s_cluster, "deployment", "noti-scoped-operator", ns))
    assert env_values(operator)["NOTI_OPERATOR_NAMESPACES"] == f"{ns},{other_namespace}"
    assert not exists(k8s_cluster, "clusterrole", f"{ns}-noti-scoped-operator")
    assert not exists(k8s_cluster, "clusterrolebinding", f"{ns}-noti-scoped-operator")
    for namespace in (ns, other_namespace):
        assert get(k8s_cluster, "role", "noti-scoped-operator", namespace)["rules"] == NAMESPACED_RULES
        binding = get(k8s_cluster, "rolebinding", "noti-scoped-operator", namespace)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "noti-scoped-operator", "namespace": ns}]
        for verb, resource, subresource in OPERATOR_MAY:
            assert can_i(k8s_cluster, user, verb, resource, namespace, subresource), (verb, resource, subresource)
        for verb, resource, subresource in OPERATOR_MAY_NOT:
            assert not can_i(k8s_cluster, user, verb, resource, namespace, subresource), (verb, resource)

    for verb, resource, subresource in OPERATOR_MAY:
        assert not can_i(k8s_cluster, user, verb, resource, unwatched, subresource), (verb, resource)
    assert can_i(k8s_cluster, user, "get", "deployments", unwatched) is False
    assert can_i(k8s_cluster, user, "get", "secrets", unwatched) is False
    assert can_i(k8s_cluster, user, "list", "deployments", None) is False  # not across namespaces
    assert can_i(k8s_cluster, user, "list", "namespaces", None) is False

    # Senders in the other watched namespace find the Secret the operator names, with the URLs only.
    copy = secret_data(get(k8s_cluster, "secret", "noti-scoped-senders", other_namespace))
    assert copy == {"NOTI_DATABASE_URL": DATABASE_URL, "NOTI_REDIS_URL": REDIS_URL}
    assert env_values(operator)["NOTI_OPERATOR_SENDER_ENV_SECRET"] == "noti-scoped-senders"
    assert not exists(k8s_cluster, "secret", "noti-scoped-senders", unwatched)
    assert not exists(k8s_cluster, "secret", "noti-scoped-connections", other_namespace)


def test_operator_env_names_a_custom_sender_image_and_its_pull_secrets(k8s_cluster: KubeCluster) -> None:
    manifests = render(
        k8s_cluster, *URLS, "--set", "image.repository=registry.example.com/noti", "--set", "image.tag=1.2.3",
        "--set", "image.pullPolicy=Always", "--set", "operator.senderImage.tag=1.2.4",
        "--set", "imagePullSecrets[0].name=regcred", "--set", "imagePullSecrets[1].name=mirror",
    )  # fmt: skip
    operator = container(find(manifests, "Deployment", "noti-operator"))
    assert env_values(operator)["NOTI_OPERATOR_SENDER_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    assert operator["image"] == "registry.example.com/noti:1.2.3"
    assert env_values(operator)["NOTI_OPERATOR_SENDER_IMAGE"] == "registry.example.com/noti:1.2.4"
    assert env_values(operator)["NOTI_OPERATOR_SENDER_IMAGE_PULL_POLICY"] == "Always"
    assert container(find(manifests, "Deployment", "noti-gateway"))["imagePullPolicy"] == "Always"


def _complete_job(cluster: KubeCluster, name: str, namespace: str, *, failed: bool) -> None:
    """Mark a Job finished as its controller would (no controller-manager runs here)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if failed:
        reason = {"reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
        conditions = [{"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, **reason}
                      for kind in ("FailureTarget", "Failed")]  # fmt: skip
        status = {"startTime": now, "failed": 1, "conditions": conditions}
    else:
        conditions = [{"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
                      for kind in ("SuccessCriteriaMet", "Complete")]  # fmt: skip
        status = {"startTime": now, "completionTime": now, "succeeded": 1, "conditions": conditions}
    cluster.kubectl("patch", "job", name, "--namespace", namespace, "--subresource=status", "--type=merge",
                    f"--patch={json.dumps({'status': status})}")  # fmt: skip


@pytest.mark.parametrize("ending", ["failed", "timed-out"])
def test_a_failed_or_timed_out_migration_leaves_neither_its_job_nor_its_secret(
    k8s_cluster: KubeCluster, k8s_namespace: str, ending: str
) -> None:
    """Before, helm deleted the Secret and kept the Job, which then could never start a pod."""
    ns = k8s_namespace
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}
    timeout = "60s" if ending == "failed" else "3s"

    def helm_install() -> None:
        outcome["install"] = k8s_cluster.helm(
            "install", "noti", str(CHART), "--namespace", ns, *URLS, f"--timeout={timeout}", check=False
        )

    installing = threading.Thread(target=helm_install)
    installing.start()
    try:
        wait_until(lambda: exists(k8s_cluster, "job", "noti-migrations", ns) or not installing.is_alive(),
                   timeout=30, what="migration Job", interval=0.1)  # fmt: skip
        if ending == "failed":
            _complete_job(k8s_cluster, "noti-migrations", ns, failed=True)
    finally:
        installing.join(timeout=120)

    assert outcome["install"].returncode != 0
    assert "pre-install" in outcome["install"].stderr
    assert not exists(k8s_cluster, "job", "noti-migrations", ns)
    assert not exists(k8s_cluster, "secret", "noti-migrations", ns)
    assert not exists(k8s_cluster, "deployment", "noti-gateway", ns)

    # The next attempt starts clean and installs.
    def helm_retry() -> None:
        outcome["retry"] = k8s_cluster.helm(
            "upgrade", "--install", "noti", str(CHART), "--namespace", ns, *URLS, "--timeout=60s", check=False
        )

    retry = threading.Thread(target=helm_retry)
    retry.start()
    try:
        wait_until(lambda: exists(k8s_cluster, "job", "noti-migrations", ns), timeout=30, what="second Job",
                   interval=0.1)  # fmt: skip
        assert secret_data(get(k8s_cluster, "secret", "noti-migrations", ns)) == {"NOTI_DATABASE_URL": DATABASE_URL}
        _complete_job(k8s_cluster, "noti-migrations", ns, failed=False)
    finally:
        retry.join(timeout=120)
    assert outcome["retry"].returncode == 0, outcome["retry"].stderr
    assert not exists(k8s_cluster, "secret", "noti-migrations", ns)


# --- values schema ------------------------------------------------------------------------------


def helm_output(cluster: KubeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.helm(*args, check=False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gateway.replicas=abc", "at '/gateway/replicas': got string, want integer"),
        ("gateway.replcas=3", "at '/gateway': additional properties 'replcas' not allowed"),
        ("logLevl=INFO", "at '': additional properties 'logLevl' not allowed"),
        ("operator.serviceAccount.nmae=x", "at '/operator/serviceAccount': additional properties 'nmae' not allowed"),
        ("senders.tuning.concurency=5", "at '/senders/tuning': additional properties 'concurency' not allowed"),
        ("monitoring.rules.enable=true", "at '/monitoring/rules': additional properties 'enable' not allowed"),
        ("operator.intervalSeconds=-5", "at '/operator/intervalSeconds': exclusiveMinimum: got -5, want 0"),
        ("operator.drainSeconds=abc", "at '/operator/drainSeconds': got string, want number"),
        ("operator.senderRate=0", "at '/operator/senderRate': exclusiveMinimum: got 0, want 0"),
        ("gateway.apnsEnvironment=prod", "at '/gateway/apnsEnvironment': value must be one of 'sandbox', 'production'"),
        ("logLevel=LOUD", "at '/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'"),
        ("gateway.port=99999", "at '/gateway/port': maximum: got 99,999, want 65,535"),
        ("operator.healthPort=0", "at '/operator/healthPort': minimum: got 0, want 1"),
        ("image.repository=", "at '/image/repository': minLength: got 0, want 1"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
        ("gateway.podDisruptionBudget.maxUnavailable=0", "at '/gateway/podDisruptionBudget/maxUnavailable'"),
        ("monitoring.interval=soon", "at '/monitoring/interval': 'soon' does not match pattern"),
        ("monitoring.rules.failureRatio=5", "at '/monitoring/rules/failureRatio': maximum: got 5, want 1"),
        ("retention.recordsDays=0", "at '/retention/recordsDays': exclusiveMinimum: got 0, want 0"),
        ("retention.schedule=hourly", "at '/retention/schedule': 'hourly' does not match pattern"),
        ("retention.keepDays=3", "at '/retention': additional properties 'keepDays' not allowed"),
        # A refused URL is named, never shown: it holds a password.
        ("database.url=garbage", "at '/database/url': 'not' failed"),
        ("database.url=http://db/noti", "at '/database/url': 'not' failed"),
        ("redis.url=localhost:6379", "at '/redis/url': 'not' failed"),
    ],
)
def test_schema_refuses_bad_values_naming_them(k8s_cluster: KubeCluster, value: str, message: str) -> None:
    for command in (("lint", str(CHART), "--strict"), ("template", "noti", str(CHART))):
        result = helm_output(k8s_cluster, *command, *URLS, "--set", value)
        assert result.returncode != 0, f"helm {command[0]} accepted {value}"
        assert message in result.stdout + result.stderr, (command[0], result.stdout + result.stderr)


@pytest.mark.parametrize(
    "url", ["mysql://noti:hunter2@db:3306/noti", "postgresql+psycopg://noti:hunter2@db :5432/noti"]
)
def test_a_refused_database_url_is_never_echoed(k8s_cluster: KubeCluster, url: str) -> None:
    for command in (("lint", str(CHART), "--strict"), ("template", "noti", str(CHART))):
        result = helm_output(k8s_cluster, *command, *URLS, "--set", f"database.url={url}")
        assert result.returncode != 0
        assert "at '/database/url': 'not' failed" in result.stdout + result.stderr
        assert "hunter2" not in result.stdout + result.stderr


def test_default_values_and_every_documented_example_pass(k8s_cluster: KubeCluster) -> None:
    examples = [
        URLS,
        ("--set", "existingSecret=noti-env"),
        # README: a custom image; skaffold: repository and tag.
        (*URLS, "--set", "image.repository=registry.example.com/noti"),
        (*URLS, "--set", "image.repository=localhost:5000/noti", "--set", "image.tag=2f3a9c1"),
        # values.yaml examples
        (*URLS, "--set", "database.url=postgresql+psycopg://user:pass@host:5432/noti",
         "--set", "redis.url=rediss://:secret@redis.example.com:6380/0"),
        (*URLS, "--set", "operator.watchNamespaces={team-a,team-b}", "--set", "imagePullSecrets[0].name=regcred",
         "--set", "gateway.extraEnv[0].name=NOTI_GATEWAY_DEFAULT_APP",
         "--set", "gateway.extraEnv[0].value=com.example.app",
         "--set", "monitoring.labels.release=kube-prometheus-stack"),
        (*URLS, "--set", "gateway.topologySpreadConstraints=null", "--set", "gateway.replicas=1"),
        ("--values", str(EXAMPLES / "values-production.yaml")),
    ]  # fmt: skip
    for values in examples:
        lint = helm_output(k8s_cluster, "lint", str(CHART), "--strict", *values)
        assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout, (values, lint.stdout, lint.stderr)
        render(k8s_cluster, *values)


# --- availability and scheduling ----------------------------------------------------------------


def test_operator_replicas_stand_by_with_a_budget_keeping_one(k8s_cluster: KubeCluster) -> None:
    single = render(k8s_cluster, *URLS)
    assert find(single, "Deployment", "noti-operator")["spec"]["replicas"] == 1
    assert not [m for m in single if m["kind"] == "PodDisruptionBudget" and "operator" in m["metadata"]["name"]]
    two = render(k8s_cluster, *URLS, "--set", "operator.replicas=2")
    deployment = find(two, "Deployment", "noti-operator")
    assert deployment["spec"]["replicas"] == 2 and "strategy" not in deployment["spec"]  # a rolling update is safe
    budget = find(two, "PodDisruptionBudget", "noti-operator")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    leader = find(two, "Role", "noti-operator-leader")
    assert leader["rules"][1] == {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                  "resourceNames": ["noti-operator"], "verbs": ["get", "update", "patch"]}  # fmt: skip


def test_gateway_gets_a_disruption_budget_only_when_more_than_one_replica_runs(k8s_cluster: KubeCluster) -> None:
    manifests = render(k8s_cluster, *URLS)
    budget = find(manifests, "PodDisruptionBudget", "noti-gateway")
    gateway = find(manifests, "Deployment", "noti-gateway")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == gateway["spec"]["selector"]
    assert not [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]
    # One operator replica gets no budget: it would block every node drain.
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "PodDisruptionBudget"] == ["noti-gateway"]

    single = render(k8s_cluster, *URLS, "--set", "gateway.replicas=1")
    assert not [m for m in single if m["kind"] == "PodDisruptionBudget"]
    off = render(k8s_cluster, *URLS, "--set", "gateway.podDisruptionBudget.enabled=false")
    assert not [m for m in off if m["kind"] == "PodDisruptionBudget"]


def test_gateway_autoscaler_owns_the_replica_count_when_enabled(k8s_cluster: KubeCluster) -> None:
    manifests = render(k8s_cluster, *URLS, "--set", "gateway.autoscaling.enabled=true",
                       "--set", "gateway.replicas=1", "--set", "gateway.autoscaling.minReplicas=3",
                       "--set", "gateway.autoscaling.maxReplicas=9")  # fmt: skip
    hpa = find(manifests, "HorizontalPodAutoscaler", "noti-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "noti-gateway"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    # helm upgrades must not reset what the autoscaler chose.
    assert "replicas" not in find(manifests, "Deployment", "noti-gateway")["spec"]
    assert find(manifests, "PodDisruptionBudget", "noti-gateway")  # minReplicas 3 > 1


def test_gateway_pods_spread_over_nodes_and_zones_softly_by_default(k8s_cluster: KubeCluster) -> None:
    pod = find(render(k8s_cluster, *URLS), "Deployment", "noti-gateway")["spec"]["template"]
    selector = {"app.kubernetes.io/name": "noti", "app.kubernetes.io/instance": "noti",
                "app.kubernetes.io/component": "gateway"}  # fmt: skip
    assert pod["spec"]["topologySpreadConstraints"] == [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": selector}}
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]  # fmt: skip
    assert selector.items() <= pod["metadata"]["labels"].items()

    hard = render(k8s_cluster, *URLS, "--set", "gateway.topologySpreadConstraints[0].maxSkew=2",
                  "--set", "gateway.topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
                  "--set", "gateway.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule")  # fmt: skip
    (constraint,) = find(hard, "Deployment", "noti-gateway")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert constraint["whenUnsatisfiable"] == "DoNotSchedule"
    assert constraint["labelSelector"] == {"matchLabels": selector}
    none = render(k8s_cluster, *URLS, "--set", "gateway.topologySpreadConstraints=null")
    assert "topologySpreadConstraints" not in find(none, "Deployment", "noti-gateway")["spec"]["template"]["spec"]


def test_scheduling_values_reach_every_pod_the_chart_makes(k8s_cluster: KubeCluster) -> None:
    args: list[str] = list(URLS)
    for component in ("gateway", "operator", "migrations"):
        args += ["--set", f"{component}.priorityClassName=noti-{component}",
                 "--set", f"{component}.nodeSelector.pool={component}",
                 "--set", f"{component}.tolerations[0].key=dedicated",
                 "--set", f"{component}.tolerations[0].operator=Exists",
                 "--set", f"{component}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                          f".nodeSelectorTerms[0].matchExpressions[0].key={component}",
                 "--set", f"{component}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                          f".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
                 "--set", f"{component}.resources.limits.cpu=3"]  # fmt: skip
    manifests = render(k8s_cluster, *args)
    for kind, name, component in (("Deployment", "noti-gateway", "gateway"),
                                  ("Deployment", "noti-operator", "operator"),
                                  ("Job", "noti-migrations", "migrations")):  # fmt: skip
        pod = find(manifests, kind, name)["spec"]["template"]["spec"]
        assert pod["priorityClassName"] == f"noti-{component}"
        assert pod["nodeSelector"] == {"pool": component}
        assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == component
        assert pod["containers"][0]["resources"]["limits"]["cpu"] == 3


def test_every_object_carries_the_instance_and_part_of_labels(k8s_cluster: KubeCluster) -> None:
    manifests = render(k8s_cluster, "--values", str(EXAMPLES / "values-production.yaml"), "--set",
                       "monitoring.operator.podMonitor=true")  # fmt: skip
    assert len(manifests) > 15
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        where = f"{manifest['kind']} {manifest['metadata']['name']}"
        assert labels["app.kubernetes.io/instance"] == "noti", where
        assert labels["app.kubernetes.io/part-of"] == "noti", where
        assert labels["app.kubernetes.io/component"], where


def test_operator_hands_the_sender_pod_defaults_to_the_operator_as_json(k8s_cluster: KubeCluster) -> None:
    default = env_values(container(find(render(k8s_cluster, *URLS), "Deployment", "noti-operator")))
    senders = yaml.safe_load((CHART / "values.yaml").read_text())["senders"]
    assert json.loads(default["NOTI_OPERATOR_SENDER_RESOURCES"]) == senders["resources"]
    assert json.loads(default["NOTI_OPERATOR_SENDER_TOPOLOGY_SPREAD_CONSTRAINTS"]) == [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
    ]
    assert json.loads(default["NOTI_OPERATOR_SENDER_POD_DISRUPTION_BUDGET"]) == {"enabled": True, "maxUnavailable": 1}
    assert json.loads(default["NOTI_OPERATOR_SENDER_TUNING"]) == {"connections": 2, "concurrency": 1000,
                                                                  "batchSize": 500}  # fmt: skip
    assert json.loads(default["NOTI_OPERATOR_SENDER_POD_LABELS"]) == {
        "app.kubernetes.io/instance": "noti", "app.kubernetes.io/part-of": "noti"
    }  # fmt: skip
    for name in ("NODE_SELECTOR", "AFFINITY", "POD_ANNOTATIONS"):
        assert json.loads(default[f"NOTI_OPERATOR_SENDER_{name}"]) == {}
    assert json.loads(default["NOTI_OPERATOR_SENDER_TOLERATIONS"]) == []
    assert default["NOTI_OPERATOR_SENDER_PRIORITY_CLASS_NAME"] == ""

    chosen = env_values(container(find(render(
        k8s_cluster, "--values", str(EXAMPLES / "values-production.yaml"),
        "--set", "senders.podAnnotations.team=push", "--set", "senders.topologySpreadConstraints=null",
    ), "Deployment", "noti-operator")))  # fmt: skip
    assert json.loads(chosen["NOTI_OPERATOR_SENDER_RESOURCES"]) == {
        "requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "1Gi"}
    }  # fmt: skip
    assert json.loads(chosen["NOTI_OPERATOR_SENDER_NODE_SELECTOR"]) == {"kubernetes.io/os": "linux"}
    assert json.loads(chosen["NOTI_OPERATOR_SENDER_TOLERATIONS"]) == [
        {"key": "dedicated", "operator": "Equal", "value": "push", "effect": "NoSchedule"}
    ]
    assert chosen["NOTI_OPERATOR_SENDER_PRIORITY_CLASS_NAME"] == "noti-critical"
    assert json.loads(chosen["NOTI_OPERATOR_SENDER_POD_ANNOTATIONS"]) == {"team": "push"}
    assert json.loads(chosen["NOTI_OPERATOR_SENDER_TOPOLOGY_SPREAD_CONSTRAINTS"]) == []
    assert json.loads(chosen["NOTI_OPERATOR_SENDER_TUNING"]) == {"connections": 4, "concurrency": 2000,
                                                                 "batchSize": 1000}  # fmt: skip


def test_production_example_installs_with_budget_autoscaler_and_network_policies(
    k8s_cluster: KubeCluster, k8s_namespace: str, other_namespace: str
) -> None:
    """Everything but the Prometheus Operator's objects, whose CRDs this apiserver lacks."""
    ns = k8s_namespace
    k8s_cluster.kubectl(
        "create", "secret", "generic", "noti-env", "--namespace", ns,
        f"--from-literal=NOTI_DATABASE_URL={DATABASE_URL}", f"--from-literal=NOTI_REDIS_URL={REDIS_URL}",
    )  # fmt: skip
    install(k8s_cluster, "noti", ns, "--values", str(EXAMPLES / "values-production.yaml"),
            "--set", f"operator.watchNamespaces={{{ns},{other_namespace}}}",
            "--set", "monitoring.gateway.serviceMonitor=false", "--set", "monitoring.senders.podMonitor=false",
            "--set", "monitoring.rules.enabled=false")  # fmt: skip

    assert get(k8s_cluster, "poddisruptionbudget", "noti-gateway", ns)["spec"]["maxUnavailable"] == 1
    assert get(k8s_cluster, "horizontalpodautoscaler", "noti-gateway", ns)["spec"]["minReplicas"] == 3
    dashboard = get(k8s_cluster, "configmap", "noti-dashboard", ns)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["noti.json"])["uid"] == "noti-overview"
    policies = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in json.loads(k8s_cluster.kubectl(
        "get", "networkpolicies", "--all-namespaces", "--selector=app.kubernetes.io/instance=noti", "--output=json",
    ).stdout)["items"] if p["metadata"]["namespace"] in (ns, other_namespace)}  # fmt: skip
    assert sorted(policies) == sorted([(ns, "noti-gateway"), (ns, "noti-operator"), (ns, "noti-senders"),
                                       (ns, "noti-retention"), (other_namespace, "noti-senders")])  # fmt: skip


# --- network policies ---------------------------------------------------------------------------


def _egress_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    return {(port["protocol"], port["port"]) for rule in policy["spec"]["egress"] for port in rule["ports"]}


def test_network_policies_allow_each_component_only_what_it_talks_to(k8s_cluster: KubeCluster) -> None:
    assert not [m for m in render(k8s_cluster, *URLS) if m["kind"] == "NetworkPolicy"]

    manifests = render(k8s_cluster, *URLS, "--set", "networkPolicy.enabled=true",
                       "--set", "networkPolicy.database.to[0].ipBlock.cidr=10.0.5.0/24")  # fmt: skip
    dns = {("UDP", 53), ("TCP", 53)}
    gateway = find(manifests, "NetworkPolicy", "noti-gateway")
    operator = find(manifests, "NetworkPolicy", "noti-operator")
    senders = find(manifests, "NetworkPolicy", "noti-senders")
    for policy in (gateway, operator, senders):
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert _egress_ports(gateway) == dns | {("TCP", 5432), ("TCP", 6379)}
    apns = {("TCP", 443), ("TCP", 2197), ("TCP", 2195), ("TCP", 2196)}  # pushes, and channel management
    assert _egress_ports(operator) == dns | apns | {("TCP", 6443), ("TCP", 5432), ("TCP", 6379)}
    assert _egress_ports(senders) == dns | apns | {("TCP", 5432), ("TCP", 6379)}
    (database,) = [rule for rule in gateway["spec"]["egress"] if rule["ports"] == [{"port": 5432, "protocol": "TCP"}]]
    assert database["to"] == [{"ipBlock": {"cidr": "10.0.5.0/24"}}]
    # Ingress: the gateway's port, and the health/metrics port of the others.
    assert gateway["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert operator["spec"]["ingress"] == [{"ports": [{"port": "health", "protocol": "TCP"}]}]
    assert senders["spec"]["ingress"] == [{"ports": [{"port": "health", "protocol": "TCP"}]}]
    # Each selects its component's pods.
    gateway_pod = find(manifests, "Deployment", "noti-gateway")["spec"]["template"]["metadata"]["labels"]
    operator_pod = find(manifests, "Deployment", "noti-operator")["spec"]["template"]["metadata"]["labels"]
    assert gateway["spec"]["podSelector"]["matchLabels"].items() <= gateway_pod.items()
    assert operator["spec"]["podSelector"]["matchLabels"].items() <= operator_pod.items()
    assert senders["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "noti", "app.kubernetes.io/component": "sender",
        "app.kubernetes.io/managed-by": "noti-operator",
    }  # fmt: skip


def test_sender_network_policy_selects_the_pods_the_operator_creates(k8s_cluster: KubeCluster) -> None:
    from noti.operator.deployment import CREDENTIAL_LABEL, SenderImage, sender_deployment

    credential = {
        "metadata": {"name": "app", "namespace": "noti"},
        "spec": {"teamId": "ABCDE12345", "keyId": "KEY1234567", "bundleId": "com.example.app",
                 "environment": "production", "privateKeySecretRef": {"name": "apns-key"}},
    }  # fmt: skip
    pod = sender_deployment(credential, "SHA256:x", SenderImage("noti:test"))["spec"]["template"]
    manifests = render(k8s_cluster, *URLS, "--set", "networkPolicy.enabled=true",
                       "--set", "monitoring.senders.podMonitor=true")  # fmt: skip
    for kind in ("NetworkPolicy", "PodMonitor"):
        manifest = find(manifests, kind, "noti-senders")
        selector = manifest["spec"]["podSelector" if kind == "NetworkPolicy" else "selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items(), kind
    ports = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
    assert "health" in ports
    # The credential label the monitor copies is the one the operator puts on the pods.
    (relabel,) = find(manifests, "PodMonitor", "noti-senders")["spec"]["podMetricsEndpoints"][0]["relabelings"]
    (source,) = relabel["sourceLabels"]
    assert source == "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", CREDENTIAL_LABEL)
    assert pod["metadata"]["labels"][CREDENTIAL_LABEL] == "app"


# --- monitoring ---------------------------------------------------------------------------------


def test_monitors_rules_and_dashboard_are_off_by_default(k8s_cluster: KubeCluster) -> None:
    kinds = {m["kind"] for m in render(k8s_cluster, *URLS)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [m for m in render(k8s_cluster, *URLS) if m["metadata"]["name"] == "noti-dashboard"]


def test_monitors_scrape_gateway_operator_and_senders_where_they_run(k8s_cluster: KubeCluster) -> None:
    on = ("--set", "monitoring.gateway.serviceMonitor=true", "--set", "monitoring.operator.podMonitor=true",
          "--set", "monitoring.senders.podMonitor=true", "--set", "monitoring.labels.release=prom")  # fmt: skip
    manifests = render(k8s_cluster, *URLS, *on)
    gateway = find(manifests, "ServiceMonitor", "noti-gateway")
    assert gateway["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert gateway["spec"]["selector"]["matchLabels"] == find(manifests, "Service", "noti-gateway")["spec"]["selector"]
    assert gateway["spec"]["namespaceSelector"] == {"matchNames": ["noti"]}
    operator = find(manifests, "PodMonitor", "noti-operator")
    assert operator["spec"]["podMetricsEndpoints"][0]["port"] == "health"
    senders = find(manifests, "PodMonitor", "noti-senders")
    assert senders["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = senders["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("health", "/metrics")
    assert endpoint["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_label_noti_dev_credential"], "targetLabel": "credential"}
    ]
    for monitor in (gateway, operator, senders):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prom"

    scoped = render(k8s_cluster, *URLS, *on, "--set", "operator.watchNamespaces={team-a,team-b}")
    assert find(scoped, "PodMonitor", "noti-senders")["spec"]["namespaceSelector"] == {
        "matchNames": ["team-a", "team-b", "noti"]
    }


def test_prometheus_rule_alerts_parse_and_use_the_configured_bounds(k8s_cluster: KubeCluster) -> None:
    import promql_parser

    manifests = render(k8s_cluster, *URLS, "--set", "monitoring.rules.enabled=true",
                       "--set", "monitoring.rules.backlogDrainSeconds=600",
                       "--set", "monitoring.rules.enqueueToSentSeconds=20",
                       "--set", "monitoring.rules.additionalLabels.team=push")  # fmt: skip
    rule = find(manifests, "PrometheusRule", "noti")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {
        "NotiCredentialNotReady", "NotiBacklogDrainTooSlow", "NotiBacklogNotDraining", "NotiSendFailureRateHigh",
        "NotiInvalidTokenRateHigh", "NotiSenderRestarting", "NotiGatewayErrorRateHigh", "NotiGatewayLatencyHigh",
        "NotiTransactionalSendsSlow",
    }  # fmt: skip
    for name, alert in alerts.items():
        promql_parser.parse(alert["expr"])  # raises on a syntax error
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["labels"]["team"] == "push", name
        assert alert["annotations"]["summary"], name
    assert alerts["NotiBacklogDrainTooSlow"]["expr"].rstrip().endswith("> 600")
    assert alerts["NotiTransactionalSendsSlow"]["expr"].rstrip().endswith("> 20")
    # Sender alerts read this release's sender PodMonitor; gateway alerts its ServiceMonitor.
    assert 'job="noti/noti-senders"' in alerts["NotiSendFailureRateHigh"]["expr"]
    assert 'job="noti-gateway", namespace="noti"' in alerts["NotiGatewayErrorRateHigh"]["expr"]


# --- retention ----------------------------------------------------------------------------------


def _retention_pod(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(find(manifests, "CronJob", "noti-retention")["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def test_retention_cronjob_runs_the_command_with_the_configured_ages(
    k8s_cluster: KubeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(k8s_cluster, *URLS, "--set", "retention.recordsDays=14",
                       "--set", "retention.rollupDays=90", "--set", "retention.schedule=5 3 * * *",
                       "--set", "retention.nodeSelector.pool=batch")  # fmt: skip
    cronjob = find(manifests, "CronJob", "noti-retention")
    assert cronjob["spec"]["schedule"] == "5 3 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"  # two runs never drop partitions at once
    pod = _retention_pod(manifests)
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["automountServiceAccountToken"] is False
    (retention,) = pod["containers"]
    assert retention["args"] == ["retention", "run"]
    assert retention["envFrom"] == [{"secretRef": {"name": "noti-connections"}}]
    settings = noti_settings({**env_values(retention), "NOTI_DATABASE_URL": DATABASE_URL}, monkeypatch)
    assert (settings.retention_records_days, settings.retention_rollup_days) == (14.0, 90.0)
    assert settings.retention_partitions_ahead == 3
    assert retention["securityContext"]["readOnlyRootFilesystem"] is True


def test_retention_is_on_by_default_and_can_be_turned_off(k8s_cluster: KubeCluster) -> None:
    assert find(render(k8s_cluster, *URLS), "CronJob", "noti-retention")
    off = render(k8s_cluster, *URLS, "--set", "retention.enabled=false")
    assert not [m for m in off if "retention" in m["metadata"]["name"]]


def test_retention_refuses_a_rollup_kept_shorter_than_the_records(k8s_cluster: KubeCluster) -> None:
    result = helm_output(k8s_cluster, "template", "noti", str(CHART), *URLS, "--set", "retention.rollupDays=7")
    assert result.returncode != 0
    assert "retention.rollupDays must be at least retention.recordsDays" in result.stderr


def test_retention_network_policy_allows_the_database_only(k8s_cluster: KubeCluster) -> None:
    manifests = render(k8s_cluster, *URLS, "--set", "networkPolicy.enabled=true")
    policy = find(manifests, "NetworkPolicy", "noti-retention")
    assert _egress_ports(policy) == {("UDP", 53), ("TCP", 53), ("TCP", 5432)}
    template = find(manifests, "CronJob", "noti-retention")["spec"]["jobTemplate"]["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
