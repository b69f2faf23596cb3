"""The operator and its senders as local processes against a :class:`~harness.k8s.KubeCluster`.

``noti operator`` runs as in its pod (KUBECONFIG instead of its ServiceAccount). There is no
kubelet: a sender Deployment's pods never start, so a sender runs as a local process with the
environment the Deployment gives its pods (only the mounted files' paths are local), and
:func:`report_available` stands in for the Deployment controller. Used by tests/k8s and bench/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client as k8s

from harness.apns import SimulatorProcess
from harness.k8s import KubeCluster
from harness.procs import free_port

GROUP, VERSION = "noti.dev", "v1alpha1"
CONNECTIONS = "noti-connections"  # the Secret of database and Redis URLs the chart creates
CREDENTIAL = "shop"
SENDER_DEPLOYMENT = f"{CREDENTIAL}-sender"
NOTI = Path(sys.executable).with_name("noti")


@dataclass
class OperatorProcess:
    process: subprocess.Popen[str]
    log: Path
    port: int

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def healthy(self) -> bool:
        """Whether it serves /healthz (so: leads); fails if it exited."""
        assert self.process.poll() is None, f"the operator exited:\n{self.tail()}"
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200
        except httpx.TransportError:
            return False


def start_operator(
    cluster: KubeCluster, namespace: str, database_url: str, redis_url: str, folder: Path, **env: str
) -> OperatorProcess:
    """``noti operator`` watching ``namespace``, with short intervals, a 3 s scale-down window and a 4 s Lease
    (``env`` overrides them)."""
    port = free_port()
    environment = {
        **os.environ, "KUBECONFIG": str(cluster.kubeconfig), "NOTI_DATABASE_URL": database_url,
        "NOTI_REDIS_URL": redis_url, "NOTI_OPERATOR_INTERVAL_SECONDS": "0.5",
        "NOTI_OPERATOR_SCALE_DOWN_SECONDS": "3", "NOTI_OPERATOR_SENDER_RATE": "10",
        "NOTI_OPERATOR_DRAIN_SECONDS": "10",
        "NOTI_OPERATOR_SENDER_IMAGE": "registry.example/noti:test", "NOTI_OPERATOR_SENDER_ENV_SECRET": CONNECTIONS,
        "NOTI_OPERATOR_SENDER_IMAGE_PULL_SECRETS": "regcred", "NOTI_OPERATOR_LEASE_NAMESPACE": namespace,
        "NOTI_OPERATOR_LEASE_SECONDS": "4", "NOTI_OPERATOR_HEALTH_PORT": str(port), "NOTI_LOG_LEVEL": "INFO", **env,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "operator.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(NOTI), "operator", "--namespace", namespace], env=environment, stdout=out, stderr=subprocess.STDOUT,
            text=True, cwd=folder,
        )  # fmt: skip
    return OperatorProcess(process, log, port)


def stop_operator(running: OperatorProcess) -> None:
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()
    print(f"--- operator log ---\n{running.tail()}")


def sender_env(
    cluster: KubeCluster, namespace: str, simulator: SimulatorProcess, key_file: Path | None = None,
    deployment: str = SENDER_DEPLOYMENT,
) -> dict[str, str]:  # fmt: skip
    """The env a pod of the sender ``deployment`` gets, with the mounted files' paths made local."""
    env = cluster.process_env(deployment, namespace)
    env.update(NOTI_APNS_KEY_FILE=str(key_file or simulator.key_path), NOTI_APNS_CA_FILE=str(simulator.ca_path),
               PATH=os.environ["PATH"])  # fmt: skip
    return env


def spawn_sender(env: dict[str, str], folder: Path, health_port: int | None = None) -> subprocess.Popen[bytes]:
    """One ``noti sender`` with ``env`` (from :func:`sender_env`), logging to ``folder``/sender.log."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**env, "NOTI_SENDER_HEALTH_PORT": str(health_port or free_port())}
    with (folder / "sender.log").open("w") as log:
        return subprocess.Popen([str(NOTI), "sender"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)


def start_sender(
    cluster: KubeCluster, namespace: str, simulator: SimulatorProcess, folder: Path, key_file: Path | None = None
) -> subprocess.Popen[bytes]:
    """A sender as its pod would run it, from its Deployment's env; only the mounted files' paths are local."""
    return spawn_sender(sender_env(cluster, namespace, simulator, key_file), folder)


def stop_sender(sender: subprocess.Popen[bytes]) -> None:
    sender.send_signal(signal.SIGTERM)
    sender.wait(timeout=40)


def report_available(apps: k8s.AppsV1Api, namespace: str, replicas: int, deployment: str = SENDER_DEPLOYMENT) -> None:
    """Stand in for the Deployment controller and kubelet, which the test cluster has not: senders are up."""
    apps.patch_namespaced_deployment_status(
        deployment, namespace, {"status": {"replicas": replicas, "readyReplicas": replicas,
                                           "availableReplicas": replicas}},
    )  # fmt: skip


def secrets(
    cluster: KubeCluster, namespace: str, simulator: SimulatorProcess, database_url: str, redis_url: str
) -> None:
    """The key and CA Secrets a user creates, and the connections Secret the chart creates."""
    for name, data in {
        "apns-key": {"AuthKey.p8": simulator.private_key_pem.decode()},
        "apns-ca": {"ca.crt": simulator.ca_path.read_text()},
        CONNECTIONS: {"NOTI_DATABASE_URL": database_url, "NOTI_REDIS_URL": redis_url},
    }.items():
        manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def apply_credential(
    cluster: KubeCluster, namespace: str, simulator: SimulatorProcess, key_id: str | None = None, **senders: int
) -> None:
    """The APNsCredential ``shop`` for the simulator's app (1 to 4 senders unless ``senders`` says otherwise)."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "APNsCredential", "metadata": {"name": CREDENTIAL},
        "spec": {
            "teamId": simulator.team_id, "keyId": key_id or simulator.key_id, "bundleId": simulator.bundle_id,
            "environment": "sandbox", "endpoint": simulator.url, "privateKeySecretRef": {"name": "apns-key"},
            "caSecretRef": {"name": "apns-ca"}, "senders": {"minReplicas": 1, "maxReplicas": 4, **senders},
        },
    }  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def apply_campaign(cluster: KubeCluster, namespace: str, name: str, **spec: Any) -> None:
    """``kubectl apply`` of an allDevices NotificationCampaign of ``shop`` (``spec`` adds or overrides fields)."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "NotificationCampaign", "metadata": {"name": name},
        "spec": {"credentialRef": {"name": CREDENTIAL}, "notification": {"title": "Winter sale", "body": "30% off"},
                 "audience": {"allDevices": True}, **spec},
    }  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
