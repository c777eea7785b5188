"""The downloads table: every image and chart dpumesh deploys (Kubernetes add-ons and the SoC services).

The table lives in ``roles/downloads/defaults/main.yml`` (``downloads_table``).
Each entry is either an image::

    multus: {type: image, registry: ghcr.io, repository: k8snetworkplumbingwg/multus-cni,
             tag: v4.2.2-thick, digest: ""}

(``digest: sha256:<64 hex>`` pins it: ``registry/repository:tag@sha256:...``; ``archive`` names the
saved image a host loads instead of pulling it), or a Helm chart::

    spiderpool_chart: {type: chart, repo_url: https://..., chart: spiderpool, version: 1.2.2}

A registry mirror replaces the registry of every image (``registry.example:5000``) or,
with a path, prefixes the repository (``registry.example:5000/mirror``). Charts from an
OCI registry are rewritten the same way; charts from an HTTP repository are listed so
they can be pulled and served from a local archive.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from dpumesh.errors import DpumeshError

_DEFAULTS_FILE = Path("roles") / "downloads" / "defaults" / "main.yml"
_TABLE_VAR = "downloads_table"
_OVERRIDES_VAR = "downloads_overrides"
_REQUIRE_VAR = "dpumesh_require_image_digests"
_MIRROR_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ARCHIVE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
# The value the inventory samples use where a real digest belongs: well-formed, never a real image.
EXAMPLE_DIGEST = "sha256:" + "0" * 64


@dataclass(frozen=True)
class MirrorItem:
    """One thing to copy into an air-gapped registry."""

    key: str
    type: str  # image | chart
    source: str  # where it comes from upstream
    target: str  # where the roles will pull it from
    version: str
    digest: str
    archive: str = ""


def merge_overrides(table: Mapping, overrides: Mapping | None) -> dict[str, dict]:
    """Entries of ``overrides`` update the fields of the table entry with the same key."""
    merged = {key: dict(entry) for key, entry in table.items()}
    for key, fields in (overrides or {}).items():
        if key not in merged:
            raise DpumeshError(
                f"{_OVERRIDES_VAR}.{key}: no such entry in the downloads table (known: {', '.join(sorted(merged))})"
            )
        merged[key].update(fields)
    return merged


def check_mirror(mirror: str) -> list[str]:
    if mirror and not _MIRROR_RE.match(mirror):
        return [f"dpumesh_registry_mirror: {mirror!r} is not a registry host[:port][/path]"]
    return []


def check_table(table: Mapping, require_digests: bool = False) -> list[str]:
    """Every problem of the table, each naming the entry and field.

    With ``require_digests`` every image must be pinned by a real digest (not ``EXAMPLE_DIGEST``).
    """
    problems: list[str] = []
    for key, entry in sorted(table.items()):
        where = f"downloads table entry {key!r}"
        kind = entry.get("type")
        if kind == "image":
            for field in ("registry", "repository"):
                if not entry.get(field):
                    problems.append(f"{where}: field {field!r} is empty")
            tag, digest = entry.get("tag") or "", entry.get("digest") or ""
            if not tag and not digest:
                problems.append(f"{where}: missing image tag (set 'tag' or 'digest')")
            if tag and not _TAG_RE.match(str(tag)):
                problems.append(f"{where}: tag {tag!r} is not a valid image tag")
            if digest and not _DIGEST_RE.match(str(digest)):
                problems.append(f"{where}: field 'digest': {digest!r} is not sha256:<64 lower-case hex digits>")
            elif require_digests and digest in ("", EXAMPLE_DIGEST):
                state = "is the example value" if digest else "is not set"
                problems.append(
                    f"{where}: field 'digest' {state}, and {_REQUIRE_VAR} is true: pin the image with the "
                    f"registry's digest (skopeo inspect --format '{{{{.Digest}}}}' docker://{_upstream(entry)})"
                )
            archive = entry.get("archive")
            if archive is not None and not _ARCHIVE_RE.match(str(archive)):
                problems.append(f"{where}: field 'archive': {archive!r} is not a plain file name")
        elif kind == "chart":
            for field in ("chart", "version"):
                if not entry.get(field):
                    problems.append(f"{where}: field {field!r} is empty")
            if not entry.get("repo_url") and not entry.get("oci_ref"):
                problems.append(f"{where}: set 'repo_url' (HTTP repository) or 'oci_ref' (OCI registry)")
        else:
            problems.append(f"{where}: type {kind!r} is not 'image' or 'chart'")
    return problems


def _upstream(entry: Mapping) -> str:
    return f"{entry.get('registry')}/{entry.get('repository')}:{entry.get('tag') or 'TAG'}"


def _mirrored(registry_and_path: str, mirror: str) -> str:
    """``ghcr.io/a/b`` → ``<mirror>/a/b`` (the first path element is the registry)."""
    if not mirror:
        return registry_and_path
    _registry, _, path = registry_and_path.partition("/")
    return f"{mirror.rstrip('/')}/{path}"


def image_ref(entry: Mapping, mirror: str = "") -> str:
    """Full reference of an image entry, pinned by digest when known."""
    ref = _mirrored(f"{entry['registry']}/{entry['repository']}", mirror)
    tag, digest = entry.get("tag") or "", entry.get("digest") or ""
    if tag:
        ref += f":{tag}"
    if digest:
        ref += f"@{digest}"
    return ref


def image_repository(entry: Mapping, mirror: str = "") -> str:
    """``registry/repository`` without the tag, for charts that take them apart."""
    return _mirrored(f"{entry['registry']}/{entry['repository']}", mirror)


def chart_source(entry: Mapping, mirror: str = "") -> dict[str, str]:
    """How helm finds a chart: an OCI reference, or a repository URL + chart name."""
    if entry.get("oci_ref"):
        oci = entry["oci_ref"].removeprefix("oci://")
        return {"chart_ref": "oci://" + _mirrored(oci, mirror), "chart_repo_url": "", "version": entry["version"]}
    return {"chart_ref": entry["chart"], "chart_repo_url": entry["repo_url"], "version": entry["version"]}


def table_problems(
    table: Mapping, overrides: Mapping | None = None, mirror: str = "", require_digests: bool = False
) -> list[str]:
    """The precheck: every problem of the table with its overrides, and of the mirror."""
    try:
        merged = merge_overrides(table, overrides)
    except DpumeshError as exc:
        return [str(exc)]
    return check_mirror(mirror) + check_table(merged, require_digests)


def resolve(
    table: Mapping, mirror: str = "", overrides: Mapping | None = None, require_digests: bool = False
) -> dict[str, dict]:
    """The table with overrides applied and a ``ref`` for every entry (image or chart)."""
    problems = check_mirror(mirror)
    merged = merge_overrides(table, overrides)
    problems += check_table(merged, require_digests)
    if problems:
        raise DpumeshError("\n".join(problems))
    resolved: dict[str, dict] = {}
    for key, entry in merged.items():
        out = dict(entry)
        if entry["type"] == "image":
            out["ref"] = image_ref(entry, mirror)
            out["image_repository"] = image_repository(entry, mirror)
            # Charts that take registry and repository apart (spiderpool) get them from here.
            out["image_registry"], _, out["image_path"] = out["image_repository"].partition("/")
        else:
            out.update(chart_source(entry, mirror))
            out["ref"] = out["chart_ref"] if entry.get("oci_ref") else f"{entry['repo_url']}#{entry['chart']}"
        resolved[key] = out
    return resolved


def service_images(
    table: Mapping,
    overrides: Mapping | None,
    services: list[str],
    entries: Mapping[str, str],
    mirror: str = "",
    need_archive: bool = False,
    require_digests: bool = False,
    var: str = "dpu_soc_image_entries",
) -> dict:
    """The image of each service, from the table entry ``entries[service]`` names.

    Returns ``{"images": {service: resolved entry (with "key" and "ref")}, "problems": [...]}``.
    """
    try:
        resolved = resolve(table, mirror, overrides, require_digests)
    except DpumeshError as exc:
        return {"images": {}, "problems": str(exc).splitlines()}
    images: dict[str, dict] = {}
    problems: list[str] = []
    for service in services:
        key = entries.get(service)
        entry = resolved.get(str(key)) if key else None
        if not key:
            problems.append(f"{var}.{service}: not set; name the downloads table entry of the service's image")
        elif entry is None:
            problems.append(f"{var}.{service}: {key!r} is not an entry of the downloads table")
        elif entry["type"] != "image":
            problems.append(f"{var}.{service}: downloads table entry {key!r} is a {entry['type']}, not an image")
        elif need_archive and not entry.get("archive"):
            problems.append(f"downloads table entry {key!r}: field 'archive' is not set (the image is loaded from one)")
        else:
            images[service] = {**entry, "key": str(key)}
    return {"images": images, "problems": problems}


def archive_digest_problems(entries: Mapping[str, Mapping], archive_dir: str | Path) -> list[str]:
    """Pinned images loaded from archives: each archive must be an OCI archive listing the pinned digest.

    A docker-archive keeps no manifest digest (podman load makes a new one), so a pin cannot hold there.
    """
    problems: list[str] = []
    for key, entry in sorted(entries.items()):
        digest, archive = entry.get("digest") or "", entry.get("archive") or ""
        if not digest or not archive:
            continue
        path = Path(archive_dir) / archive
        where = f"downloads table entry {key!r}: field 'digest'"
        try:
            with tarfile.open(path) as tar:
                member = tar.extractfile("index.json") if "index.json" in tar.getnames() else None
                index = json.load(member) if member else None
        except (OSError, tarfile.TarError, json.JSONDecodeError) as exc:
            problems.append(f"{where}: cannot read archive {path}: {exc}")
            continue
        if index is None:
            problems.append(
                f"{where}: {digest} is pinned but archive {path} is not an OCI archive, so the image's digest "
                f"cannot hold after loading; save it with: skopeo copy --preserve-digests "
                f"docker://{_upstream(entry)}@{digest} oci-archive:{archive}:{_upstream(entry)}"
            )
            continue
        held = [str(m.get("digest")) for m in index.get("manifests") or [] if isinstance(m, dict)]
        if digest not in held:
            problems.append(f"{where}: archive {path} holds {', '.join(held) or 'no image'}, not the pinned {digest}")
    return problems


def mirror_list(
    table: Mapping, mirror: str = "", overrides: Mapping | None = None, require_digests: bool = False
) -> list[MirrorItem]:
    """Everything to copy for an air-gapped site, sorted by type then key."""
    upstream = resolve(table, "", overrides, require_digests)
    target = resolve(table, mirror, overrides)
    items = [
        MirrorItem(
            key=key,
            type=entry["type"],
            source=entry["ref"],
            target=target[key]["ref"],
            version=str(entry.get("tag") or entry.get("version") or ""),
            digest=str(entry.get("digest") or ""),
            archive=str(entry.get("archive") or ""),
        )
        for key, entry in upstream.items()
    ]
    return sorted(items, key=lambda item: (item.type != "image", item.key))


def format_mirror_list(items: list[MirrorItem], fmt: str = "text") -> str:
    """``text``: aligned table; ``refs``: one source reference per line (for scripts)."""
    if fmt == "refs":
        return "".join(f"{item.source}\n" for item in items)
    if fmt != "text":
        raise DpumeshError(f"unknown format {fmt!r}: use 'text' or 'refs'")
    rows = [("TYPE", "KEY", "VERSION", "DIGEST", "ARCHIVE", "SOURCE", "TARGET")]
    rows += [(i.type, i.key, i.version, i.digest or "-", i.archive or "-", i.source, i.target) for i in items]
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def default_defaults_file() -> Path:
    """``roles/k8s_common/defaults/main.yml`` of the checkout this package is installed from."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / _DEFAULTS_FILE
        if candidate.is_file():
            return candidate
    candidate = Path.cwd() / _DEFAULTS_FILE
    if candidate.is_file():
        return candidate
    raise DpumeshError(f"cannot find {_DEFAULTS_FILE}: run from the dpumesh checkout or pass the file")


def load_downloads_table(defaults_file: Path | None = None) -> dict[str, dict]:
    """Read ``downloads_table`` from the role defaults (or the given YAML file)."""
    path = defaults_file or default_defaults_file()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DpumeshError(f"{path}: cannot read the downloads table: {exc}") from exc
    table = data.get(_TABLE_VAR)
    if not isinstance(table, dict) or not table:
        raise DpumeshError(f"{path}: no {_TABLE_VAR} mapping")
    return table


def load_inventory_settings(paths: list[Path]) -> dict:
    """``downloads_overrides``, ``dpumesh_registry_mirror`` and ``dpumesh_require_image_digests`` from
    inventory variable files (later files win), for ``dpumesh images --vars``."""
    settings: dict = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DpumeshError(f"{path}: cannot read inventory variables: {exc}") from exc
        if not isinstance(data, dict):
            raise DpumeshError(f"{path}: not a mapping of variables")
        for var in (_OVERRIDES_VAR, "dpumesh_registry_mirror", _REQUIRE_VAR):
            if var in data:
                settings[var] = data[var]
    if not isinstance(settings.get(_OVERRIDES_VAR, {}), dict):
        raise DpumeshError(f"{_OVERRIDES_VAR}: must be a mapping of entry name to fields")
    return settings


def images_report(
    mirror: str = "",
    fmt: str = "text",
    defaults_file: Path | None = None,
    var_files: list[Path] | None = None,
) -> str:
    """What ``dpumesh images`` prints: every image and chart, upstream and (with a mirror) where it goes.

    ``var_files`` are inventory files whose overrides, mirror and digest requirement apply; ``mirror``
    given here wins over theirs.
    """
    settings = load_inventory_settings(var_files or [])
    items = mirror_list(
        load_downloads_table(defaults_file),
        mirror or str(settings.get("dpumesh_registry_mirror") or ""),
        settings.get(_OVERRIDES_VAR),
        bool(settings.get(_REQUIRE_VAR)),
    )
    return format_mirror_list(items, fmt)
