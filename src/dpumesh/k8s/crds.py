"""Validate custom resources against real CustomResourceDefinitions (their openAPIV3Schema).

The API server prunes or rejects fields a structural schema does not declare; this does
the strict version of that: where a schema lists ``properties`` and does not set
``x-kubernetes-preserve-unknown-fields``, any other field is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import jsonschema
import yaml

from dpumesh.k8s.manifests import object_ref, plain


def _strict(schema: Mapping) -> dict:
    """OpenAPI v3 (Kubernetes dialect) → JSON Schema that rejects undeclared fields."""
    out: dict = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = _strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_strict(sub) for sub in value]
        elif key == "nullable":
            continue
        else:
            out[key] = value
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict]:
    """``(apiVersion, kind) → JSON Schema`` for every served version of every CRD under ``crd_dir``."""
    schemas: dict[tuple[str, str], dict] = {}
    for path in sorted(Path(crd_dir).rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec.get("versions") or []:
                schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
                if version.get("served", True) and schema:
                    strict = _strict(schema)
                    # metadata is validated by the API server itself, not by the CRD schema.
                    strict.setdefault("properties", {})["metadata"] = {"type": "object"}
                    schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = strict
    return schemas


def validate_against_crds(manifests: Iterable[Mapping], schemas: Mapping[tuple[str, str], dict]) -> list[str]:
    """Problems of every manifest whose (apiVersion, kind) has a schema; others are skipped."""
    problems = []
    for manifest in plain(list(manifests)):
        schema = schemas.get((manifest.get("apiVersion"), manifest.get("kind")))
        if schema is None:
            continue
        for error in sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=str):
            path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
            problems.append(f"{object_ref(manifest)}: {path}: {error.message}")
    return problems
