"""Versioned config directories with an atomic `current` symlink.

Layout under a root (e.g. /etc/dpumesh/proxy on a DPU SoC):

    versions/<version>/...   one directory per config version, never modified once in place
    current -> versions/<v>  swapped with rename(2): readers see the old or the new tree, never a mix
    previous -> versions/<v> the last known-good version, for rollback

After the swap a health check (see `proxy_health`) must pass: the proxy is
ready, serves the new version in both LDS and CDS, and a probe request goes
through it. When it does not, `current` goes back to the version before and
the refused version is removed, so the next run tries it again.

Standard library only: this file is also the Ansible module_utils the
dpumesh_activate module runs on the target hosts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

VERSIONS = "versions"
HealthCheck = Callable[[str], "str | None"]  # version -> why it is not healthy, or None


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


def run_command(argv: list[str], timeout: float = 300) -> str | None:
    """Run `argv`; the tail of its output when it fails, or None."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {argv[0]}: {exc}"
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
        return " | ".join(lines[-5:]) or f"{argv[0]} exited {result.returncode}"
    return None


def validate(staged: str, command: list[str] | None) -> str | None:
    """Run `command` (with {staged} substituted) on the staged tree; the error text, or None."""
    if not command:
        return None
    return run_command([part.replace("{staged}", staged) for part in command])


# -- health of the proxy after a swap ----------------------------------------------------------
_FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())"


def fetch(url: str, netns: str | None = None) -> str:
    """GET `url`, from inside network namespace `netns` when given; OSError when it cannot."""
    if netns is None:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.read().decode()
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", _FETCH, url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{url}: no answer in 5 s") from exc
    if done.returncode != 0:
        raise OSError(f"{url}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return done.stdout


def served_versions(stats: str) -> dict[str, str]:
    """LDS and CDS versions Envoy accepted, from its `/stats?filter=version_text` text ("" when unknown)."""
    found = {"lds": "", "cds": ""}
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        for kind in found:
            if name.endswith(f"{kind}.version_text"):
                found[kind] = value.strip().strip('"')
    return found


def proxy_health(
    version: str,
    admin_url: str = "http://127.0.0.1:15000",
    netns: str | None = None,
    probe: list[str] | None = None,
    timeout: float = 15.0,
) -> str | None:
    """Why the proxy is not healthy on `version` within `timeout`, or None.

    Healthy: admin /ready says LIVE, LDS and CDS both report `version`, and the
    probe command (a request through the proxy) succeeds.
    """
    deadline = time.monotonic() + timeout
    state = "not asked yet"
    while True:
        try:
            ready = fetch(f"{admin_url}/ready", netns).strip()
            served = served_versions(fetch(f"{admin_url}/stats?filter=version_text", netns))
            state = f"ready={ready}, lds={served['lds'] or '-'}, cds={served['cds'] or '-'}"
            if ready == "LIVE" and served == {"lds": version, "cds": version}:
                break
        except OSError as exc:
            state = f"admin unreachable ({exc})"
        if time.monotonic() > deadline:
            return f"the proxy does not serve version {version} after {timeout:.0f} s ({state})"
        time.sleep(0.2)
    while probe:
        problem = run_command(probe, timeout=10)
        if problem is None:
            break
        if time.monotonic() > deadline:
            return f"the probe request through the proxy fails: {problem}"
        time.sleep(0.2)
    return None


# -- versions ---------------------------------------------------------------------------------
def activate(
    root: str,
    staged: str,
    version: str,
    keep: int = 5,
    check: list[str] | None = None,
    health: HealthCheck | None = None,
    bridges: list[tuple[str, str]] | None = None,
) -> dict:
    """Make the staged tree version `version`, point `current` at it, and check the proxy's health.

    `bridges` are (version, staged tree) pairs made current, each checked, on the way (make before
    break: e.g. new clusters before the routes that use them); they are removed afterwards.
    Returns {"changed", "current", "previous", "error", "rolled_back"}; on a validation error nothing
    moves; when `health` finds a problem `current` goes back to the version before.
    """
    os.makedirs(os.path.join(root, VERSIONS), exist_ok=True)
    before = current_version(root)
    steps = [*(bridges or []), (version, staged)]
    unchanged = {"changed": False, "current": before, "previous": before, "error": None, "rolled_back": False}
    if before == version and os.path.isdir(os.path.join(root, VERSIONS, version)):
        _discard(steps)
        return unchanged
    for step_version, step_staged in steps:
        error = validate(step_staged, check)
        if error:
            _discard(steps)
            return {**unchanged, "error": error if step_version == version else f"bridge {step_version}: {error}"}
    for step_version, step_staged in steps:
        target = os.path.join(root, VERSIONS, step_version)
        if os.path.isdir(target):
            shutil.rmtree(step_staged, ignore_errors=True)  # a version id names its content: the copy is identical
        else:
            os.replace(step_staged, target)
    for step_version, _ in steps:
        _point(root, "current", step_version)
        problem = health(step_version) if health else None
        if problem:
            problem += "" if step_version == version else f" (at bridge {step_version})"
            return _refuse_after_swap(root, [v for v, _ in steps], before, problem, health)
    for step_version, _ in steps[:-1]:
        shutil.rmtree(os.path.join(root, VERSIONS, step_version), ignore_errors=True)
    if before is not None:
        _point(root, "previous", before)
    prune(root, keep)
    return {"changed": True, "current": version, "previous": before, "error": None, "rolled_back": False}


def _discard(steps: list[tuple[str, str]]) -> None:
    for _, staged in steps:
        shutil.rmtree(staged, ignore_errors=True)


def _refuse_after_swap(root: str, versions: list[str], before: str | None, problem: str, health: HealthCheck) -> dict:
    """Put `before` back as current, drop `versions` (the new one last, bridges before it), and say why."""
    version = versions[-1]
    error = f"version {version} failed its health check: {problem}"
    if before is None:
        return {
            "changed": True,
            "current": current_version(root),
            "previous": None,
            "error": error,
            "rolled_back": False,
        }
    _point(root, "current", before)
    for dropped in versions:
        shutil.rmtree(os.path.join(root, VERSIONS, dropped), ignore_errors=True)
    again = health(before)
    error += f"; rolled back to {before}" + (f", which is not healthy either: {again}" if again else "")
    return {"changed": True, "current": before, "previous": before, "error": error, "rolled_back": True}


def rollback(root: str) -> dict:
    """Point `current` back at `previous`."""
    before = current_version(root)
    link = os.path.join(root, "previous")
    if not os.path.islink(link):
        error = "no previous version to roll back to"
        return {"changed": False, "current": before, "previous": None, "error": error, "rolled_back": False}
    previous = os.path.basename(os.readlink(link))
    _point(root, "current", previous)
    if before is not None:
        _point(root, "previous", before)
    return {"changed": True, "current": previous, "previous": before, "error": None, "rolled_back": True}


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
