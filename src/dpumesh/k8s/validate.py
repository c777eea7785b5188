"""Checks every rendered manifest before it is written or applied.

Built-in kinds: kubernetes-validate in strict mode (unknown fields are errors) for each
supported Kubernetes version. Custom resources: the field schemas in ``crd_schemas``.
Plus what no schema says: unique objects, DNS names, JSON in CNI configs, RBAC rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache

import jsonschema
from kubernetes_validate import utils as kubernetes_validate

from dpumesh.k8s.crd_schemas import CUSTOM_RESOURCES
from dpumesh.k8s.manifests import object_ref, plain
from dpumesh.k8s.rbac import rbac_problems

# The Kubernetes minor versions dpumesh supports; the roles validate against each one.
SUPPORTED_VERSIONS = ("1.26", "1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33")

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CLUSTER_SCOPED_BUILTIN = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Node"}

_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name"],
    "additionalProperties": False,
}


@cache
def _custom_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    _namespaced, spec = CUSTOM_RESOURCES[(api_version, kind)]
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
    }
    return jsonschema.Draft202012Validator(schema)


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _builtin_problems(manifest: dict, versions: Iterable[str]) -> list[str]:
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"Kubernetes {version}: {_path(exc)}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"Kubernetes {version}: {exc.message}")
    return problems


def _custom_problems(manifest: dict) -> list[str]:
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    namespaced, _spec = CUSTOM_RESOURCES[key]
    validator = _custom_validator(*key)
    problems = [f"{_path(e)}: {e.message}" for e in sorted(validator.iter_errors(manifest), key=str)]
    has_namespace = bool((manifest.get("metadata") or {}).get("namespace"))
    if namespaced and not has_namespace:
        problems.append("metadata.namespace: required for a namespaced resource")
    if not namespaced and has_namespace:
        problems.append("metadata.namespace: must be empty for a cluster-scoped resource")
    if manifest.get("kind") == "NetworkAttachmentDefinition":
        try:
            json.loads(manifest["spec"]["config"])
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"spec.config: not a JSON CNI configuration ({exc})")
    return problems


def _metadata_problems(manifest: Mapping) -> list[str]:
    meta = manifest.get("metadata") or {}
    problems = []
    name, namespace = meta.get("name", ""), meta.get("namespace")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS subdomain name")
    if namespace is not None and (not isinstance(namespace, str) or not _DNS_LABEL.match(namespace)):
        problems.append(f"metadata.namespace: {namespace!r} is not a DNS label")
    if manifest.get("kind") in _CLUSTER_SCOPED_BUILTIN and namespace:
        problems.append("metadata.namespace: must be empty for a cluster-scoped resource")
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"metadata.labels.{key}: {value!r} is not a valid label value")
    return problems


def validate_manifests(manifests: Iterable[Mapping], versions: Iterable[str] = SUPPORTED_VERSIONS) -> list[str]:
    """Every problem, each prefixed with the object it is in. Empty when all is well."""
    manifests = plain(list(manifests))
    versions = tuple(str(v) for v in versions)
    problems: list[str] = []
    seen: set[tuple] = set()
    for manifest in manifests:
        if not isinstance(manifest, dict) or "kind" not in manifest or "apiVersion" not in manifest:
            problems.append(f"not a Kubernetes object: {str(manifest)[:80]}")
            continue
        ref = object_ref(manifest)
        meta = manifest.get("metadata") or {}
        identity = (manifest["apiVersion"].split("/")[0], manifest["kind"], meta.get("namespace"), meta.get("name"))
        if identity in seen:
            problems.append(f"{ref}: rendered twice")
        seen.add(identity)
        own = _metadata_problems(manifest)
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_RESOURCES:
            own += _custom_problems(manifest)
        else:
            own += _builtin_problems(manifest, versions)
        problems += [f"{ref}: {p}" for p in own]
    problems += rbac_problems(manifests)
    return problems
