"""Versioned config directories with an atomic `current` symlink.

Layout under a root (e.g. /etc/dpumesh/proxy on a DPU SoC):

    versions/<version>/...   one directory per config version, never modified once in place
    current -> versions/<v>  swapped with rename(2): readers see the old or the new tree, never a mix
    previous -> versions/<v> the last known-good version, for rollback

Standard library only: this file is also the Ansible module_utils the
dpumesh_activate module runs on the target hosts.
"""

from __future__ import annotations

import os
import shutil
import subprocess

VERSIONS = "versions"


def current_version(root: str) -> str | None:
    link = os.path.join(root, "current")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def _point(root: str, name: str, version: str) -> None:
    tmp = os.path.join(root, f".{name}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join(VERSIONS, version), tmp)
    os.replace(tmp, os.path.join(root, name))


def _versions_by_age(root: str) -> list[str]:
    base = os.path.join(root, VERSIONS)
    if not os.path.isdir(base):
        return []
    names = [n for n in os.listdir(base) if not n.startswith(".")]
    return sorted(names, key=lambda n: os.stat(os.path.join(base, n)).st_mtime)


def validate(staged: str, command: list[str] | None) -> str | None:
    """Run `command` (with {staged} substituted) on the staged tree; the error text, or None."""
    if not command:
        return None
    argv = [part.replace("{staged}", staged) for part in command]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc}"
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
        return " | ".join(lines[-5:]) or f"{argv[0]} exited {result.returncode}"
    return None


def activate(root: str, staged: str, version: str, keep: int = 5, check: list[str] | None = None) -> dict:
    """Make the staged tree version `version` and point `current` at it.

    Returns {"changed", "current", "previous", "error"}; on a validation error nothing moves.
    """
    os.makedirs(os.path.join(root, VERSIONS), exist_ok=True)
    before = current_version(root)
    target = os.path.join(root, VERSIONS, version)
    if before == version and os.path.isdir(target):
        shutil.rmtree(staged, ignore_errors=True)
        return {"changed": False, "current": version, "previous": before, "error": None}
    error = validate(staged, check)
    if error:
        shutil.rmtree(staged, ignore_errors=True)
        return {"changed": False, "current": before, "previous": before, "error": error}
    if os.path.isdir(target):
        shutil.rmtree(staged, ignore_errors=True)  # a version id names its content: the old copy is identical
    else:
        os.replace(staged, target)
    if before is not None:
        _point(root, "previous", before)
    _point(root, "current", version)
    prune(root, keep)
    return {"changed": True, "current": version, "previous": before, "error": None}


def rollback(root: str) -> dict:
    """Point `current` back at `previous`."""
    before = current_version(root)
    link = os.path.join(root, "previous")
    if not os.path.islink(link):
        return {"changed": False, "current": before, "previous": None, "error": "no previous version to roll back to"}
    previous = os.path.basename(os.readlink(link))
    _point(root, "current", previous)
    if before is not None:
        _point(root, "previous", before)
    return {"changed": True, "current": previous, "previous": before, "error": None}


def prune(root: str, keep: int) -> list[str]:
    """Remove the oldest versions beyond `keep`, never the current or previous one."""
    protected = {current_version(root)}
    link = os.path.join(root, "previous")
    if os.path.islink(link):
        protected.add(os.path.basename(os.readlink(link)))
    removed = []
    versions = _versions_by_age(root)
    for name in versions[: max(0, len(versions) - keep)]:
        if name not in protected:
            shutil.rmtree(os.path.join(root, VERSIONS, name), ignore_errors=True)
            removed.append(name)
    return removed
