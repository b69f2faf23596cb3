"""CRD schemas as the apiserver applies them: undeclared fields are errors unless a node preserves them."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft4Validator

from noti.crd_schema import json_schema, problems

CRD_FILE = "notificationcampaigns.noti.dev.yaml"


def _crd(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "widgets.example.dev"},
        "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]},
    }


def _errors(schema: dict[str, Any], instance: dict[str, Any]) -> list[str]:
    validator = Draft4Validator(json_schema(_crd(schema), "v1"))
    return sorted(error.message for error in validator.iter_errors({"metadata": {"name": "w"}, **instance}))


SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "size": {"type": "integer"},
                "parts": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "anything": {"x-kubernetes-preserve-unknown-fields": True},
                "port": {"x-kubernetes-int-or-string": True},
            },
        },
    },
}


def test_undeclared_fields_are_errors_at_every_depth() -> None:
    assert _errors(SCHEMA, {"spec": {"size": 1, "colour": "red", "parts": [{"name": "a", "weight": 2}]}}) == [
        "Additional properties are not allowed ('colour' was unexpected)",
        "Additional properties are not allowed ('weight' was unexpected)",
    ]
    assert _errors(SCHEMA, {"sepc": {}}) == ["Additional properties are not allowed ('sepc' was unexpected)"]


def test_preserved_and_map_fields_take_what_they_are_given() -> None:
    instance = {
        "apiVersion": "example.dev/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}, "managedFields": [{"manager": "kubectl"}]},
        "spec": {
            "labels": {"any": "key"}, "extra": {"free": {"form": [1]}}, "anything": [1, {"x": 2}], "port": "http",
        },
    }  # fmt: skip
    assert _errors(SCHEMA, instance) == []
    assert _errors(SCHEMA, {"spec": {"port": 8080}}) == []
    assert len(_errors(SCHEMA, {"spec": {"port": 1.5}})) == 1


def test_problems_name_each_field_by_its_path() -> None:
    manifest = {
        "apiVersion": "noti.dev/v1alpha1",
        "kind": "NotificationCampaign",
        "metadata": {"name": "sale"},
        "spec": {
            "credentialRef": {"name": "app"},
            "notification": {"title": "Hi", "collapseId": "x" * 65},
            "audience": {"deviceTokens": ["ab" * 32, "nothex"]},
            "ratePerSec": 10,
        },
    }
    assert problems(manifest, CRD_FILE, "v1alpha1") == [
        "spec.ratePerSec: unknown field",
        f"spec.audience.deviceTokens[1]: 'nothex' does not match '{'^([0-9a-fA-F]{2}){32,}$'}'",
        f"spec.notification.collapseId: '{'x' * 65}' is too long",
    ]
    assert problems({"kind": "NotificationCampaign"}, CRD_FILE, "v1alpha1") == ["metadata: required", "spec: required"]
    assert problems([], CRD_FILE, "v1alpha1") == ["the manifest: must be an object"]
