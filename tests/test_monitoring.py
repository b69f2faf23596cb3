"""The chart's alerts and dashboard name only metrics, and labels, that the gateway and a sender export."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from harness.apns import SimulatorProcess
from harness.k8s import k8s_binary
from harness.procs import free_port
from harness.sender import enqueue, final_count
from noti.sender.service import Sender
from noti.settings import Settings

CHART = Path(__file__).resolve().parents[1] / "charts" / "noti"
# Series other exporters provide (kube-state-metrics): sender availability and restarts.
EXTERNAL = {
    "kube_deployment_spec_replicas", "kube_deployment_status_replicas_available",
    "kube_pod_container_status_restarts_total",
}  # fmt: skip
# Labels Prometheus adds to every scraped series (the sender PodMonitor adds "credential").
TARGET_LABELS = {"job", "namespace", "pod", "container", "instance", "endpoint", "service", "credential"}
# Grafana's variables, replaced by what they stand for so the expressions parse as PromQL.
GRAFANA = {"$__rate_interval": "5m", "$namespace": ".*", "$credential": ".*"}


def _render() -> list[dict[str, Any]]:
    result = subprocess.run(
        [k8s_binary("helm"), "template", "noti", str(CHART), "--set", "existingSecret=noti-env",
         "--set", "monitoring.rules.enabled=true", "--set", "monitoring.dashboard.enabled=true"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def shipped_expressions() -> dict[str, str]:
    """Every PromQL expression of the PrometheusRule and of the dashboard as the chart ships them, by where."""
    manifests = _render()
    (rule,) = [m for m in manifests if m["kind"] == "PrometheusRule"]
    found = {f"alert {r['alert']}": r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    (configmap,) = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "noti-dashboard"]
    dashboard = json.loads(configmap["data"]["noti.json"])
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<selector>, <label>)
            (selector,) = re.findall(r"label_values\((.*),\s*\w+\)", variable["query"]["query"])
            found[f"variable {variable['name']}"] = selector
    for where, expr in found.items():
        for variable, stands_for in GRAFANA.items():
            expr = expr.replace(variable, stands_for)
        found[where] = expr
    return found


def selectors(expr: str) -> Iterable[tuple[str, set[str]]]:
    """(metric name, label names matched) of each series selector in ``expr``."""
    found: list[tuple[str, set[str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {matcher.name for matcher in node.matchers.matchers}))

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def exported(*texts: str) -> dict[str, set[str]]:
    """Sample name (with _total, _bucket, _sum, _count suffixes) -> its label names, from /metrics bodies."""
    samples: dict[str, set[str]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, set()).update(set(sample.labels) - {"le", "quantile"})
    return samples


async def _scrape_sender(simulator: SimulatorProcess, engine: Engine, client: redis.Redis) -> str:
    """A sender delivering a few notifications (one to a token APNs no longer knows), scraped at the end."""
    env = {key.removeprefix("NOTI_").lower(): value for key, value in simulator.sender_env().items()}
    config = Settings(**{"credential": "default/test", "sender_health_port": free_port(), **env}).sender  # type: ignore[arg-type]
    tokens = [f"{i:064x}" for i in range(20)]
    simulator.set_faults(unregistered=[tokens[0]])
    enqueue(engine, client, simulator, tokens, with_devices=True)
    sender = Sender(config)
    task = asyncio.create_task(sender.run())
    try:
        for _ in range(300):
            if await asyncio.to_thread(final_count, engine) >= len(tokens):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sender.health_port}") as http:
            response = await http.get("/metrics")
    finally:
        sender.stop()
        await asyncio.wait_for(task, 30)
    assert response.status_code == 200
    return response.text


def _scrape_gateway(base_url: str, client: redis.Redis) -> str:
    """The gateway after a request, with a transactional stream to report the depth of."""
    client.xadd("noti:{default/push}:tx", {"probe": "1"})
    with httpx.Client(base_url=base_url) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/api/devices/").status_code == 401
        response = http.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_every_metric_and_label_the_alerts_and_dashboard_name_is_exported(
    sender_env: None, live_gateway: str, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    sender_text = await _scrape_sender(apns_simulator, clean_db, clean_redis)
    gateway_text = await asyncio.to_thread(_scrape_gateway, live_gateway, clean_redis)
    samples = exported(sender_text, gateway_text)
    expressions = shipped_expressions()
    assert any(where.startswith("alert ") for where in expressions)
    assert any(where.startswith("panel ") for where in expressions)

    missing, unknown_labels, external = [], [], set()
    for where, expr in expressions.items():
        for name, labels in selectors(expr):
            if name in EXTERNAL:
                external.add(name)
            elif name not in samples:
                missing.append(f"{where}: {name}")
            elif extra := labels - samples[name] - TARGET_LABELS:
                unknown_labels.append(f"{where}: {name} has no label {sorted(extra)}")
    assert not missing, "metrics nobody exports:\n" + "\n".join(missing)
    assert not unknown_labels, "\n".join(unknown_labels)
    assert external == EXTERNAL, "EXTERNAL lists a metric no rule uses"


async def test_result_values_the_alerts_match_are_ones_senders_report(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    samples = list(text_string_to_metric_families(await _scrape_sender(apns_simulator, clean_db, clean_redis)))
    (family,) = [f for f in samples if f.name == "noti_sender_notifications"]
    results = {sample.labels["result"] for sample in family.samples if sample.name.endswith("_total")}
    assert {"sent", "invalid_token"} <= results
    # Every sent notification is timed from its queuing: 19 sent (one token is unregistered), none
    # waited long, and the alert reads the traffic the sender labels them with.
    sent = sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels["result"] == "sent")
    (latency,) = [f for f in samples if f.name == "noti_sender_enqueue_to_sent_seconds"]
    counts = {s.labels["traffic"]: s.value for s in latency.samples if s.name.endswith("_count")}
    assert counts == {"transactional": sent} and sent == 19
    waited = {s.labels["le"]: s.value for s in latency.samples if s.name.endswith("_bucket")}
    assert waited["60.0"] == sent
    rules = "\n".join(e for where, e in shipped_expressions().items() if where.startswith("alert "))
    assert 'result="invalid_token"' in rules and 'result="failed"' in rules
    assert 'result=~"sent|failed|invalid_token"' in rules
    assert 'traffic="transactional"' in rules
