"""Stable on-disk form of rendered manifests (one file per object) for render mode."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import yaml

from dpumesh.k8s.crd_schemas import CRD_NAMES, CUSTOM_RESOURCES

# Order objects are applied in: what others refer to comes first.
_APPLY_ORDER = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "Role",
    "ClusterRoleBinding",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "DaemonSet",
    "Deployment",
]


def plain(obj):
    """Plain dict/list/str/int copy: drops templating-engine subclasses so YAML dumps cleanly."""
    return json.loads(json.dumps(obj))


def object_ref(manifest: Mapping) -> str:
    """``Kind namespace/name`` (or ``Kind name`` for cluster-scoped objects) for messages."""
    meta = manifest.get("metadata") or {}
    name = meta.get("name", "<no name>")
    namespace = meta.get("namespace")
    return f"{manifest.get('kind', '<no kind>')} {namespace}/{name}" if namespace else f"{manifest.get('kind')} {name}"


def file_name(manifest: Mapping) -> str:
    """``<kind>.<namespace>.<name>.yaml``; cluster-scoped objects have no namespace part."""
    meta = manifest["metadata"]
    parts = [manifest["kind"].lower()]
    if meta.get("namespace"):
        parts.append(meta["namespace"])
    parts.append(meta["name"])
    return ".".join(parts) + ".yaml"


def apply_order(manifests: Iterable[Mapping]) -> list[dict]:
    """Stable sort by kind rank; custom resources after everything built in."""
    rank = {kind: index for index, kind in enumerate(_APPLY_ORDER)}
    indexed = list(enumerate(plain(list(manifests))))
    indexed.sort(key=lambda pair: (rank.get(pair[1].get("kind"), len(rank)), pair[0]))
    return [manifest for _, manifest in indexed]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (configs, bootstraps) as literal blocks, so rendered files read well."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(manifest: Mapping) -> str:
    return yaml.dump(plain(manifest), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def render_files(manifests: Iterable[Mapping]) -> list[dict[str, str]]:
    """``[{name, content}]`` in apply order, plus ``kustomization.yaml`` listing them for GitOps tools."""
    ordered = apply_order(manifests)
    files = [{"name": file_name(m), "content": "---\n" + dump(m)} for m in ordered]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f["name"] for f in files],
    }
    files.append({"name": "kustomization.yaml", "content": "---\n" + dump(kustomization)})
    return files


def apply_plan(manifests: Iterable[Mapping]) -> dict:
    """What apply mode does, in order: built-in objects, wait for CRDs, custom resources, wait for rollouts.

    ``crds`` lists every CRD to wait for: those rendered here and those the custom resources need.
    ``daemonsets`` gives namespace, name and node selector of each DaemonSet to wait for.
    """

    ordered = apply_order(manifests)
    builtin = [m for m in ordered if (m["apiVersion"], m["kind"]) not in CUSTOM_RESOURCES]
    custom = [m for m in ordered if (m["apiVersion"], m["kind"]) in CUSTOM_RESOURCES]
    crds = [m["metadata"]["name"] for m in builtin if m["kind"] == "CustomResourceDefinition"]
    crds += sorted({CRD_NAMES[m["kind"]] for m in custom} - set(crds))
    daemonsets = [
        {
            "namespace": m["metadata"]["namespace"],
            "name": m["metadata"]["name"],
            "node_selector": [
                f"{k}={v}" for k, v in sorted(m["spec"]["template"]["spec"].get("nodeSelector", {}).items())
            ],
        }
        for m in builtin
        if m["kind"] == "DaemonSet"
    ]
    return {"builtin": builtin, "custom": custom, "crds": crds, "daemonsets": daemonsets}
