"""The Helm chart: it renders, installs into a real kube-apiserver, and grants the operator no more than it needs."""

from __future__ import annotations

import base64
import json
import os
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

# The operator's rights, in every watched namespace: nothing more (least privilege).
NAMESPACED_RULES = [
    {"apiGroups": ["noti.dev"], "resources": ["apnscredentials", "notificationcampaigns"],
     "verbs": ["get", "list", "watch", "patch", "update"]},
    {"apiGroups": ["noti.dev"], "resources": ["apnscredentials/status", "notificationcampaigns/status"],
     "verbs": ["get", "patch", "update"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]  # fmt: skip
# ... and, watching every namespace, what kopf needs to observe namespaces and CRDs.
CLUSTER_ONLY_RULES = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["get", "list", "watch"]},
]  # fmt: skip

# (verb, resource, subresource) the operator needs in a watched namespace, and some it must not have.
OPERATOR_MAY = [
    ("patch", "notificationcampaigns", "status"),
    ("update", "apnscredentials", "status"),
    ("watch", "notificationcampaigns", ""),
    ("patch", "apnscredentials", ""),
    ("create", "deployments", ""),
    ("delete", "deployments", ""),
    ("get", "secrets", ""),
    ("create", "events", ""),
    ("create", "events.events.k8s.io", ""),
]
OPERATOR_MAY_NOT = [
    ("delete", "secrets", ""),
    ("create", "secrets", ""),
    ("create", "pods", ""),
    ("list", "configmaps", ""),
    ("create", "notificationcampaigns", ""),
    ("delete", "apnscredentials", ""),
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
        ((*URLS, "--set", "operator.watchNamespaces=team-a"), "noti: operator.watchNamespaces must be a list"),
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
    assert hook["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    pod = job["spec"]["template"]["spec"]
    (migrate,) = pod["containers"]
    assert migrate["image"] == IMAGE
    assert migrate["args"] == ["migrate"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert migrate["envFrom"] == [{"secretRef": {"name": "noti-migrations"}}]

    # The Job's Secret is a hook of the same events, created before the Job and gone with it.
    annotations = secret["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(annotations["helm.sh/hook-weight"]) < int(hook.get("helm.sh/hook-weight", "0"))
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
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
    for crd in ("apnscredentials.noti.dev", "notificationcampaigns.noti.dev"):
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
    assert spec["strategy"] == {"type": "Recreate"}
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

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        done = {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
        met = {**done, "type": "SuccessCriteriaMet"}
        status = {"startTime": now, "completionTime": now, "succeeded": 1, "conditions": [met, done]}
        k8s_cluster.kubectl("patch", "job", "noti-migrations", "--namespace", ns, "--subresource=status",
                            "--type=merge", f"--patch={json.dumps({'status': status})}")  # fmt: skip
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
    assert can_i(k8s_cluster, user, "list", "deployments", None) is True  # across namespaces
    assert can_i(k8s_cluster, user, "watch", "namespaces", None) is True
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
    assert can_i(k8s_cluster, user, "list", "deployments", unwatched) is False
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
