"""Manifests checked against a CRD's openAPIV3Schema, as the apiserver's strict field validation would.

The schema is read from the CRD file itself (``crds/``, shipped as ``noti.crds``), never copied.
Kubernetes structural schemas drop or, under strict validation, refuse fields they do not
declare unless a node says ``x-kubernetes-preserve-unknown-fields``; JSON Schema allows them.
:func:`json_schema` spells that rule out (``additionalProperties: false``) so a JSON Schema
validator reports a typo such as ``spec.ratePerSec`` as the unknown field it is. CEL rules
(``x-kubernetes-validations``) are not evaluated here: the code that reads the spec checks those.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft4Validator, ValidationError

# Declared by every object, outside the CRD's own schema: the apiserver checks these as ObjectMeta.
# Kept loose on purpose: what the apiserver adds to metadata must not make a manifest invalid.
_ENVELOPE: dict[str, Any] = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "namespace": {"type": "string"},
            "uid": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """One schema node with Kubernetes' meaning made explicit for a JSON Schema validator."""
    if node.get("x-kubernetes-int-or-string"):
        node = {**node, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    if node.get("nullable") and "type" in node:
        node = {**node, "type": [node["type"], "null"]}
    if "properties" in node:
        node["properties"] = {name: _structural(child) for name, child in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _structural(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"])
    for key in _SUBSCHEMA_LISTS:
        if key in node:
            node[key] = [_structural(child) for child in node[key]]
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    return node


def json_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The JSON Schema of one served version of a CRD, unknown fields forbidden where Kubernetes forbids them."""
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            schema = _structural(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
            schema["properties"] = {**_ENVELOPE, **schema.get("properties", {})}
            schema["required"] = ["metadata", *schema.get("required", [])]
            return schema
    raise KeyError(f"{crd['metadata']['name']} serves no version {version}")


@functools.cache
def _validator(crd_file: str, version: str) -> Draft4Validator:
    crd = yaml.safe_load(resources.files("noti.crds").joinpath(crd_file).read_text())
    return Draft4Validator(json_schema(crd, version))


def _where(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(error: ValidationError) -> Iterator[str]:
    path = _where(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and error.validator_value is False and isinstance(instance, dict):
        declared = error.schema.get("properties", {})
        for name in instance:
            if name not in declared:
                yield f"{_child(path, name)}: unknown field"
    elif error.validator == "required" and isinstance(instance, dict):
        for name in error.validator_value:
            if name not in instance:
                yield f"{_child(path, name)}: required"
    elif error.validator == "type":
        # The expected type, not the value: a value can be long (or a token), and the type is what to fix.
        wanted = error.validator_value
        expected = wanted if isinstance(wanted, str) else " or ".join(wanted)
        yield f"{path or 'the manifest'}: must be {'an' if expected[0] in 'aeiou' else 'a'} {expected}"
    else:
        yield f"{path or 'the manifest'}: {error.message}"


def problems(manifest: Any, crd_file: str, version: str) -> list[str]:
    """Every way ``manifest`` breaks the CRD's schema, each as ``path: what is wrong`` (empty when valid)."""
    errors = sorted(_validator(crd_file, version).iter_errors(manifest), key=lambda e: [str(p) for p in e.path])
    return list(dict.fromkeys(line for error in errors for line in _describe(error)))
