"""Make-before-break steps between two versions of a node's proxy config.

Envoy reloads the file-based LDS and CDS of a new version one after the other, in
no promised order. A route that names a cluster Envoy does not have (yet, or any
more) answers 503, so a version that adds or removes clusters goes live in steps:

1. the old listeners with the old and the new clusters (new clusters exist first),
2. the new listeners with the old and the new clusters (nothing they use is missing),
3. the new version itself (the clusters no route uses any more go).

Step 1 is left out when no cluster is added, step 2 when none is removed. Each
step is a complete tree: the old files overlaid with the new ones, so every SDS
file either listener set refers to is there.
"""

from __future__ import annotations

from pathlib import Path

import yaml

LDS, CDS = "envoy/lds.yaml", "envoy/cds.yaml"
# libyaml when present: a node's listeners and clusters are megabytes of YAML on a large cluster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _resources(text: bytes | str) -> dict[str, dict]:
    return {r["name"]: r for r in (yaml.load(text, Loader=_LOADER) or {}).get("resources", [])}


def _dump(version: str, resources: list[dict]) -> bytes:
    return yaml.dump({"version_info": version, "resources": resources}, Dumper=_DUMPER, sort_keys=False).encode()


def read_tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def bridges(old: dict[str, bytes], new: dict[str, bytes], version: str) -> list[tuple[str, dict[str, bytes]]]:
    """The (version id, files) steps to go through from `old` to `new` (the new version's id is `version`)."""
    if not {LDS, CDS} <= set(old) or not {LDS, CDS} <= set(new):
        return []
    old_clusters, new_clusters = _resources(old[CDS]), _resources(new[CDS])
    added, removed = set(new_clusters) - set(old_clusters), set(old_clusters) - set(new_clusters)
    union = [*new_clusters.values(), *(old_clusters[name] for name in sorted(removed))]
    steps = []
    for step, listeners, needed in (("clusters-first", old[LDS], added), ("routes-moved", new[LDS], removed)):
        if needed:
            step_version = f"{version}-{step}"
            files = {**old, **new}
            files[LDS] = _dump(step_version, list(_resources(listeners).values()))
            files[CDS] = _dump(step_version, union)
            steps.append((step_version, files))
    return steps
