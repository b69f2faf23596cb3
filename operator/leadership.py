"""One operator acts at a time: whoever holds a coordination.k8s.io Lease, renewing it as it goes.

A second replica (a ``kubectl scale``, a rolling update, a pod on a partitioned node) waits
until the Lease is free. A leader that cannot renew in time stops acting: it exits, so that
Kubernetes restarts it as a follower, instead of acting beside the new leader.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("noti.operator.leadership")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    name: str = "noti-operator"
    namespace: str = ""  # empty: the pod's own namespace, else "default"
    duration: int = 15  # seconds a leader's lease lasts without renewal
    renew_deadline: int = 10  # a leader that could not renew for this long steps down
    retry_period: int = 2

    def resolved_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"


def identity() -> str:
    """This candidate's name in the Lease: the pod's hostname and the process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def lead(settings: LeaseSettings, *, grace_seconds: float = 10.0) -> None:
    """Block until this process holds the Lease; keep renewing it in the background.

    Losing it afterwards stops the process (SIGTERM, then a hard exit after ``grace_seconds``).
    Needs the Kubernetes client configured (kubeconfig or in-cluster) beforehand.
    """
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    namespace = settings.resolved_namespace()
    me = identity()
    leading = threading.Event()

    def stopped_leading() -> None:
        log.critical("lost the Lease %s/%s: stopping so that only the new leader acts", namespace, settings.name)
        threading.Timer(grace_seconds, os._exit, (1,)).start()
        os.kill(os.getpid(), signal.SIGTERM)

    config = electionconfig.Config(
        LeaseLock(settings.name, namespace, me), settings.duration, settings.renew_deadline, settings.retry_period,
        leading.set, stopped_leading,
    )  # fmt: skip
    log.info("%s: waiting to hold the Lease %s/%s (one operator acts at a time)", me, namespace, settings.name)
    threading.Thread(target=leaderelection.LeaderElection(config).run, name="leader-election", daemon=True).start()
    leading.wait()
    log.info("%s: holds the Lease %s/%s: acting", me, namespace, settings.name)


def release(settings: LeaseSettings) -> None:
    """Give the Lease up on a clean stop, so that a waiting replica leads at once instead of after it expires."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CoordinationV1Api()
    namespace = settings.resolved_namespace()
    try:
        lease = api.read_namespaced_lease(settings.name, namespace)
        if lease.spec and lease.spec.holder_identity == identity():
            api.patch_namespaced_lease(settings.name, namespace, {"spec": {"holderIdentity": None}})
            log.info("released the Lease %s/%s", namespace, settings.name)
    except ApiException as exc:
        log.warning("could not release the Lease %s/%s: %s", namespace, settings.name, exc.reason)
