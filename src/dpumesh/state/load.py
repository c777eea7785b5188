"""Read raw Kubernetes objects from a manifest directory or a live cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dpumesh.errors import DpumeshError, InputError, InputProblem

# (apiVersion group, plural) of every kind the compiler reads from a live cluster.
LIVE_KINDS: dict[str, tuple[str, str, str]] = {
    "Node": ("", "v1", "nodes"),
    "Namespace": ("", "v1", "namespaces"),
    "Pod": ("", "v1", "pods"),
    "Service": ("", "v1", "services"),
    "ServiceAccount": ("", "v1", "serviceaccounts"),
    "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices"),
    "VirtualService": ("networking.istio.io", "v1", "virtualservices"),
    "DestinationRule": ("networking.istio.io", "v1", "destinationrules"),
    "ServiceEntry": ("networking.istio.io", "v1", "serviceentries"),
    "Sidecar": ("networking.istio.io", "v1", "sidecars"),
    "EnvoyFilter": ("networking.istio.io", "v1alpha3", "envoyfilters"),
    "PeerAuthentication": ("security.istio.io", "v1", "peerauthentications"),
    "AuthorizationPolicy": ("security.istio.io", "v1", "authorizationpolicies"),
    "RequestAuthentication": ("security.istio.io", "v1", "requestauthentications"),
    "WasmPlugin": ("extensions.istio.io", "v1alpha1", "wasmplugins"),
}

_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: large states load 5x faster
_STR, _MAP, _SEQ, _NULL, _BOOL, _MERGE, _VALUE = (
    f"tag:yaml.org,2002:{name}" for name in ("str", "map", "seq", "null", "bool", "merge", "value")
)


class _Loader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader, remembering how each plain scalar resolves (a manifest repeats the same words)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._resolved: dict[str, str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is not yaml.ScalarNode or not implicit[0] or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        tag = self._resolved.get(value)
        if tag is None:
            tag = self._resolved[value] = super().resolve(kind, value, implicit)
        return tag


class _Fallback(Exception):
    """A node the fast construction leaves to PyYAML (merge keys, a mapping or list as a key)."""


def _construct(loader: _Loader, node: yaml.Node, made: dict[int, Any]) -> Any:
    """What SafeLoader makes of `node`, for the common tags without its generator machinery.

    Aliases stay shared objects (`made`, by node); every other tag goes to PyYAML's own constructor.
    """
    tag = node.tag
    if tag == _STR and isinstance(node, yaml.ScalarNode):
        return node.value
    if id(node) in made:
        return made[id(node)]
    if tag == _MAP and isinstance(node, yaml.MappingNode):
        mapping: dict[Any, Any] = {}
        made[id(node)] = mapping
        for key_node, value_node in node.value:
            # a plain string key or value (most of a manifest) is read here, without a call
            if key_node.tag == _STR and type(key_node) is yaml.ScalarNode:
                key = key_node.value
            elif key_node.tag in (_MERGE, _VALUE) or not isinstance(key_node, yaml.ScalarNode):
                raise _Fallback
            else:
                key = _construct(loader, key_node, made)
            if value_node.tag == _STR and type(value_node) is yaml.ScalarNode:
                mapping[key] = value_node.value
            else:
                mapping[key] = _construct(loader, value_node, made)
        return mapping
    if tag == _SEQ and isinstance(node, yaml.SequenceNode):
        items: list[Any] = []
        made[id(node)] = items
        for item in node.value:
            items.append(
                item.value if item.tag == _STR and type(item) is yaml.ScalarNode else _construct(loader, item, made)
            )
        return items
    if tag == _NULL and isinstance(node, yaml.ScalarNode):
        return None
    if tag == _BOOL and isinstance(node, yaml.ScalarNode):
        return loader.bool_values[node.value.lower()]
    made[id(node)] = value = loader.construct_object(node, deep=True)
    return value


def _documents(text: str) -> list[Any]:
    """Every document of a YAML stream, as yaml.load_all with the safe loader gives them."""
    loader = _Loader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            try:
                docs.append(_construct(loader, node, {}))
            except (_Fallback, RecursionError):
                docs.append(loader.construct_document(node))
            loader.constructed_objects, loader.recursive_objects = {}, {}
    finally:
        loader.dispose()
    return docs


def load_manifest_dir(path: str | Path) -> list[dict[str, Any]]:
    """Every object of every *.yaml/*.yml file below `path`, in a stable order."""
    root = Path(path)
    if not root.is_dir():
        raise DpumeshError(f"state directory {root} does not exist or is not a directory")
    objects: list[dict[str, Any]] = []
    problems: list[InputProblem] = []
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    for file in files:
        rel = str(file.relative_to(root))
        try:
            docs = _documents(file.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            problems.append(InputProblem("File", "", rel, "", f"not valid YAML{where}: {exc}"))
            continue
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                problems.append(InputProblem("File", "", rel, f"document {index + 1}", "is not a mapping"))
                continue
            items = doc.get("items") if doc.get("kind", "").endswith("List") else [doc]
            for item in items or []:
                if isinstance(item, dict):
                    item.setdefault("_source", f"{rel}#{index + 1}")
                    objects.append(item)
    if problems:
        raise InputError(problems)
    return objects


def load_live(kubeconfig: str | Path, context: str | None = None) -> list[dict[str, Any]]:
    """Every object the compiler reads, listed from the API server behind `kubeconfig`."""
    try:
        from kubernetes import client, config, dynamic
        from kubernetes.client.exceptions import ApiException
    except ImportError as exc:  # the kube extra is not installed
        raise DpumeshError("reading a live cluster needs the 'kubernetes' Python package") from exc
    try:
        api = config.new_client_from_config(config_file=str(kubeconfig), context=context)
    except Exception as exc:  # kubeconfig problems come in many exception types
        raise DpumeshError(f"cannot use kubeconfig {kubeconfig}: {exc}") from exc
    dyn = dynamic.DynamicClient(api)
    objects: list[dict[str, Any]] = []
    for kind, (group, version, _plural) in LIVE_KINDS.items():
        api_version = f"{group}/{version}" if group else version
        try:
            resource = dyn.resources.get(api_version=api_version, kind=kind)
            listed = resource.get()
        except ApiException as exc:
            raise DpumeshError(f"cannot list {kind} ({api_version}): {exc.reason}") from exc
        except Exception as exc:  # resource not served: an optional CRD is absent
            if "ResourceNotFound" in type(exc).__name__:
                continue
            raise DpumeshError(f"cannot list {kind} ({api_version}): {exc}") from exc
        for item in listed.to_dict().get("items", []):
            item["apiVersion"], item["kind"] = api_version, kind
            objects.append(item)
    del client
    return objects
