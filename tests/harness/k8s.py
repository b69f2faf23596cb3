"""A throwaway Kubernetes control plane: etcd and kube-apiserver on random loopback ports.

There is no kubelet, scheduler or controller-manager: objects are stored and validated,
Deployments run no pods, nothing is garbage-collected and deleted namespaces stay
Terminating. Components run as local processes instead, with ``KubeCluster.process_env``.
The binaries come from ``scripts/build-k8s-bins.sh``; a missing one fails, never skips.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s
from kubernetes.config import new_client_from_config

from harness.procs import cache_dir, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO / "tests" / "k8s" / "bin" / "versions.env"
BUILD_SCRIPT = "scripts/build-k8s-bins.sh"
BINARIES = ("etcd", "kube-apiserver", "kubectl", "helm")
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "noti-test-admin"


def versions() -> dict[str, str]:
    """The pinned versions in tests/k8s/bin/versions.env."""
    pairs = (line.split("=", 1) for line in VERSIONS_FILE.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.lstrip().startswith("#")}


def bin_dir() -> Path:
    """``$NOTI_K8S_BIN_DIR``, else the cache directory scripts/build-k8s-bins.sh builds into."""
    if explicit := os.environ.get("NOTI_K8S_BIN_DIR"):
        return Path(explicit)
    pinned = versions()
    key = f"kube-{pinned['KUBE_VERSION']}_etcd-{pinned['ETCD_VERSION']}_helm-{pinned['HELM_VERSION']}"
    return cache_dir() / "k8s" / key / "bin"


def k8s_binary(name: str) -> str:
    """The path of a built Kubernetes test binary; missing ones raise, naming the build script."""
    candidate = bin_dir() / name
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise RuntimeError(
            f"{name} is not built in {candidate.parent}: run {BUILD_SCRIPT} "
            "(scripts/test.sh does, and exports NOTI_K8S_BIN_DIR)"
        )
    return str(candidate)


# --- certificates -------------------------------------------------------------------------


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    sans: Sequence[x509.GeneralName] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    """A one-day certificate for ``key``: self-signed CA when ``issuer`` is None, else a leaf."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        usages = {"key_cert_sign": True, "crl_sign": True}
    else:
        usages = {"key_cert_sign": False, "crl_sign": False}
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False, **usages,
        ),
        critical=True,
    )  # fmt: skip
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    """The files of the cluster's CA, serving and admin certificates and service-account keys."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_signing_key: Path
    sa_public_key: Path


def make_pki(directory: Path) -> Pki:
    """Generate a CA, the apiserver's serving certificate, a system:masters client and SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(*(directory / name for name in ("ca.crt", "apiserver.crt", "apiserver.key", "admin.crt",
                                               "admin.key", "sa.key", "sa.pub")))  # fmt: skip
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "noti-test-ca")]), ca_key)
    _write_cert(pki.ca_cert, ca)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"]  # fmt: skip
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]
    serving = _issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), serving_key,
        issuer=(ca, ca_key), sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )  # fmt: skip
    _write_cert(pki.serving_cert, serving)
    _write_key(pki.serving_key, serving_key)

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
        x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
    ])  # fmt: skip
    admin = _issue(admin_name, admin_key, issuer=(ca, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_cert(pki.admin_cert, admin)
    _write_key(pki.admin_key, admin_key)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_signing_key, sa_key)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


# --- kubeconfigs ----------------------------------------------------------------------------


def write_kubeconfig(path: Path, *, server: str, ca: Path, user: Mapping[str, str], namespace: str = "default") -> Path:
    """A one-context kubeconfig; ``user`` is its user entry (client cert paths or a token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "noti-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "noti-test", "user": dict(user)}],
        "contexts": [{"name": "noti-test", "context": {"cluster": "noti-test", "user": "noti-test",
                                                        "namespace": namespace}}],
        "current-context": "noti-test",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


# --- processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Runs in the child: be killed when pytest dies, even by SIGKILL, so nothing is left behind."""
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    _log_file: IO[bytes]

    @classmethod
    def start(cls, name: str, args: Sequence[str], log: Path) -> _Process:
        log_file = log.open("wb")
        popen = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        return cls(name, popen, log, log_file)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait(timeout=timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)  # stray children of the group
        finally:
            self._log_file.close()


# --- the cluster ----------------------------------------------------------------------------


@dataclass(repr=False)
class KubeCluster:
    """A running etcd + kube-apiserver, and the ways tests talk to it as admin or as someone else."""

    root: Path
    server: str = ""
    kubeconfig: Path = field(init=False)
    ca_path: Path = field(init=False)
    pki: Pki = field(init=False)
    _processes: list[_Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kubeconfig = self.root / "admin.kubeconfig"
        self.ca_path = self.root / "pki" / "ca.crt"

    def __repr__(self) -> str:
        return f"KubeCluster(server={self.server!r}, kubeconfig={str(self.kubeconfig)!r})"

    # lifecycle

    def start(self, timeout: float = 120) -> None:
        """Start etcd and kube-apiserver; return once /readyz is ok and ``default`` exists."""
        etcd, apiserver = k8s_binary("etcd"), k8s_binary("kube-apiserver")
        self.pki = make_pki(self.root / "pki")
        client_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        self._processes.append(_Process.start("etcd", [
            etcd, "--name=noti-test", f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=noti-test={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
        ], self.root / "etcd.log"))  # fmt: skip
        self._wait(lambda: port_open(client_port), timeout, "etcd")

        self.server = f"https://127.0.0.1:{api_port}"
        self._processes.append(_Process.start("kube-apiserver", [
            apiserver, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--etcd-servers={etcd_url}", f"--cert-dir={self.root / 'pki'}",
            f"--tls-cert-file={self.pki.serving_cert}", f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca_cert}", "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self.pki.sa_public_key}",
            f"--service-account-signing-key-file={self.pki.sa_signing_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true", "--profiling=false",
        ], self.root / "kube-apiserver.log"))  # fmt: skip
        write_kubeconfig(
            self.kubeconfig, server=self.server, ca=self.pki.ca_cert,
            user={"client-certificate": str(self.pki.admin_cert), "client-key": str(self.pki.admin_key)},
        )  # fmt: skip
        self._wait(self._ready, timeout, "kube-apiserver /readyz")
        # The apiserver's own bootstrap controller creates it; no controller-manager is involved.
        self._wait(lambda: b'"default"' in self._get("/api/v1/namespaces/default"), timeout, "namespace default")

    def stop(self) -> None:
        """Stop the apiserver, then etcd; leaves the files for ``cleanup``."""
        while self._processes:
            self._processes.pop().stop()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        def alive_and() -> bool:
            for process in self._processes:
                process.check_alive()
            return bool(check())

        try:
            wait_until(alive_and, timeout=timeout, what=what, interval=0.2)
        except TimeoutError as error:
            tails = "\n".join(f"--- {p.name} log ---\n{p.log_tail()}" for p in self._processes)
            raise TimeoutError(f"{error}\n{tails}") from None

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def _get(self, path: str) -> bytes:
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl_context(), timeout=5) as response:
                return bytes(response.read())
        except urllib.error.HTTPError:
            return b""

    def _ready(self) -> bool:
        return self._get("/readyz") == b"ok"

    # clients

    def api_client(self, *, as_user: str | None = None, as_groups: Sequence[str] = (),
                   token: str | None = None) -> k8s.ApiClient:  # fmt: skip
        """A ``kubernetes`` ApiClient: admin, admin impersonating ``as_user``, or bearer ``token``."""
        if token is not None:
            configuration = k8s.Configuration()
            configuration.host = self.server
            configuration.ssl_ca_cert = str(self.ca_path)
            configuration.api_key = {"authorization": token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
            return k8s.ApiClient(configuration)
        api = new_client_from_config(config_file=str(self.kubeconfig), persist_config=False)
        if as_user is not None:
            api.set_default_header("Impersonate-User", as_user)
            # The client sends one value per header name; more groups need a token instead.
            if len(as_groups) > 1:
                raise ValueError("impersonating several groups needs a token: use service_account_token")
            if as_groups:
                api.set_default_header("Impersonate-Group", as_groups[0])
        return api

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, as_user: str | None = None,
                kubeconfig: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run the built kubectl against this cluster; ``check`` raises with its stderr on failure."""
        command = [k8s_binary("kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}"]
        if as_user is not None:
            command.append(f"--as={as_user}")
        return _run([*command, *args], input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this cluster, with its state kept in the cluster's temp dir."""
        home = self.root / "helm"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
               "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}  # fmt: skip
        return _run([k8s_binary("helm"), *args], env=env, check=check, timeout=timeout)

    # service accounts and components

    def service_account_token(self, name: str, namespace: str = "default", *, create: bool = True,
                              expiration_seconds: int = 3600) -> str:  # fmt: skip
        """A TokenRequest-issued token of ServiceAccount ``namespace/name``, created first if ``create``."""
        core = k8s.CoreV1Api(self.api_client())
        try:
            if create:
                try:
                    core.create_namespaced_service_account(
                        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
                    )
                except k8s.ApiException as error:
                    if error.status != 409:
                        raise
            spec = k8s.V1TokenRequestSpec(audiences=[SERVICE_ACCOUNT_ISSUER], expiration_seconds=expiration_seconds)
            response = core.create_namespaced_service_account_token(
                name, namespace, k8s.AuthenticationV1TokenRequest(spec=spec)
            )
            token = response.status.token if response.status else None
            if not token:
                raise RuntimeError(f"TokenRequest for {namespace}/{name} returned no token")
            return token
        finally:
            core.api_client.close()

    def service_account_kubeconfig(self, name: str, namespace: str = "default", *, create: bool = True) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` with a fresh token."""
        token = self.service_account_token(name, namespace, create=create)
        path = self.root / "kubeconfigs" / f"{namespace}.{name}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        return write_kubeconfig(path, server=self.server, ca=self.ca_path, user={"token": token}, namespace=namespace)

    def process_env(
        self, deployment: str, namespace: str = "default", *, container: str | None = None
    ) -> dict[str, str]:
        """The env a pod of ``deployment`` would get, plus KUBECONFIG for its ServiceAccount.

        Resolves literal values, ConfigMap and Secret references (``env`` and ``envFrom``) and
        the ``metadata.namespace``/``metadata.name``/``spec.serviceAccountName`` field refs, so a
        test can run the component as a local process with the rights the chart grants it.
        """
        api = self.api_client()
        try:
            spec = k8s.AppsV1Api(api).read_namespaced_deployment(deployment, namespace).to_dict()["spec"]["template"]
            pod_spec = spec["spec"]
            containers = pod_spec["containers"]
            chosen = next((c for c in containers if c["name"] == container), None) if container else containers[0]
            if chosen is None:
                raise KeyError(f"deployment {namespace}/{deployment} has no container {container!r}")
            account = pod_spec.get("service_account_name") or "default"
            fields = {"metadata.namespace": namespace, "metadata.name": f"{deployment}-local",
                      "spec.serviceAccountName": account}  # fmt: skip
            env = _resolve_env(k8s.CoreV1Api(api), namespace, chosen, fields)
        finally:
            api.close()
        # The absent controller-manager would have created every namespace's "default" account.
        kubeconfig = self.service_account_kubeconfig(account, namespace, create=account == "default")
        env["KUBECONFIG"] = str(kubeconfig)
        return env


def _decode(data: Mapping[str, bytes | str] | None) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


def _resolve_env(core: k8s.CoreV1Api, namespace: str, container: Mapping[str, Any],
                 fields: Mapping[str, str]) -> dict[str, str]:  # fmt: skip
    """A container's environment with its references looked up, as the kubelet would."""
    env: dict[str, str] = {}
    for source in container.get("env_from") or []:
        prefix = source.get("prefix") or ""
        if ref := source.get("config_map_ref"):
            data = core.read_namespaced_config_map(ref["name"], namespace).data or {}
        else:
            data = _decode(core.read_namespaced_secret(source["secret_ref"]["name"], namespace).data)
        env.update({prefix + key: value for key, value in data.items()})
    for var in container.get("env") or []:
        value_from = var.get("value_from")
        if value_from is None:
            env[var["name"]] = _expand(var.get("value") or "", env)
        elif ref := value_from.get("config_map_key_ref"):
            env[var["name"]] = (core.read_namespaced_config_map(ref["name"], namespace).data or {})[ref["key"]]
        elif ref := value_from.get("secret_key_ref"):
            env[var["name"]] = _decode(core.read_namespaced_secret(ref["name"], namespace).data)[ref["key"]]
        elif ref := value_from.get("field_ref"):
            env[var["name"]] = fields[ref["field_path"]]
        else:
            raise ValueError(f"env {var['name']}: cannot resolve {value_from} outside a pod")
    return env


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of earlier variables; ``$$`` escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), value)  # fmt: skip


def _run(command: list[str], *, input: str | None = None, env: Mapping[str, str] | None = None, check: bool,
         timeout: float) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run(command, input=input, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        shown = " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command))
        raise RuntimeError(f"{shown} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return result


def unique_name(prefix: str, seed: str) -> str:
    """A DNS-1123 name from ``prefix`` and a short hash of ``seed`` (e.g. a test's node id)."""
    return f"{prefix}-{hashlib.sha1(seed.encode()).hexdigest()[:10]}"


def apply_crds(cluster: KubeCluster) -> None:
    """Apply the project's CRDs (crds/) and wait until they are established."""
    paths = sorted((REPO / "crds").glob("*.yaml"))
    names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in paths]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", *(f"--filename={path}" for path in paths))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in names))


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[KubeCluster]:
    """The session's etcd + kube-apiserver (RBAC on, service-account tokens enabled)."""
    cluster = KubeCluster(Path(tempfile.mkdtemp(prefix="noti-k8s-")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def noti_crds(k8s_cluster: KubeCluster) -> KubeCluster:
    """The session cluster with the project's CRDs (crds/) applied and established."""
    apply_crds(k8s_cluster)
    return k8s_cluster


@pytest.fixture
def k8s_namespace(k8s_cluster: KubeCluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace for one test; it is never deleted (without controllers it would hang Terminating)."""
    name = unique_name("t", request.node.nodeid)
    api = k8s_cluster.api_client()
    try:
        namespace = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"noti.dev/test": "true"}))
        k8s.CoreV1Api(api).create_namespace(namespace)
    finally:
        api.close()
    return name
