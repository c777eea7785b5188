#!/usr/bin/python
"""Activate a compiled dpumesh config version on a DPU SoC."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dpumesh_activate
short_description: Unpack, validate and atomically activate a dpumesh config version
description:
  - Unpacks a config archive into a staging directory next to O(root), runs an optional validation
    command on it, moves it to C(versions/<version>) and swaps the C(current) symlink with one rename,
    so readers (Envoy watching the directory) see the old or the new tree, never a mix.
  - Keeps the previous version as C(previous) and the last O(keep) versions on disk.
  - With O(state=rollback), points C(current) back at C(previous).
options:
  root:
    description: Directory that holds C(versions/), C(current) and C(previous).
    type: path
    required: true
  archive:
    description: A tar.gz of the version's files, already on the target. Required with O(state=present).
    type: path
  version:
    description: The version id (content hash) of the archive.
    type: str
  keep:
    description: How many versions to keep on disk.
    type: int
    default: 5
  validate_command:
    description:
      - Command run on the staged tree before activation; C({staged}) is replaced by its path.
        A non-zero exit refuses the version and leaves C(current) untouched.
    type: list
    elements: str
    default: []
  bridges:
    description:
      - Make-before-break steps activated, each health-checked, before O(version) and removed afterwards.
        Each archive holds the step's C(envoy/lds.yaml) and C(envoy/cds.yaml); the rest of the step's tree is
        the current version overlaid with the new one, so every file either listener set refers to is there.
    type: list
    elements: dict
    default: []
  health_check:
    description:
      - After the swap, wait until the proxy's admin C(/ready) says LIVE and its LDS and CDS report O(version),
        then run O(probe_command). When that does not happen within O(health_timeout) seconds, C(current) goes
        back to the version before, the new version is removed and the task fails with the reason.
    type: bool
    default: false
  admin_url:
    description: The proxy's admin address on the target.
    type: str
    default: http://127.0.0.1:15000
  netns:
    description: Network namespace the proxy runs in (the lab's emulated SoCs); empty for the host's own.
    type: str
    default: ""
  probe_command:
    description: A request through the proxy, run on the target after the swap; a non-zero exit is unhealthy.
    type: list
    elements: str
    default: []
  health_timeout:
    description: Seconds the proxy has to serve the new version.
    type: float
    default: 15
  state:
    description: C(present) activates O(version); C(rollback) returns to the previous version.
    type: str
    choices: [present, rollback]
    default: present
author: dpumesh maintainers
"""

EXAMPLES = r"""
- name: Activate a compiled config
  dpumesh_activate:
    root: /etc/dpumesh/proxy
    archive: /tmp/bundle.tar.gz
    version: 3cfcdbeedfeeb9da
    validate_command: [envoy, --mode, validate, -c, "{staged}/envoy/validate.yaml"]

- name: Roll back
  dpumesh_activate:
    root: /etc/dpumesh/proxy
    state: rollback
"""

RETURN = r"""
current:
  description: The version C(current) points at after the task.
  returned: always
  type: str
previous:
  description: The version C(current) pointed at before the task.
  returned: always
  type: str
rolled_back:
  description: Whether the new version failed its health check and C(current) went back.
  returned: always
  type: bool
"""

import os
import shutil
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.dpumesh_activate import activate, current_version, proxy_health, rollback


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "archive": {"type": "path"},
            "version": {"type": "str"},
            "keep": {"type": "int", "default": 5},
            "validate_command": {"type": "list", "elements": "str", "default": []},
            "bridges": {"type": "list", "elements": "dict", "default": []},
            "health_check": {"type": "bool", "default": False},
            "admin_url": {"type": "str", "default": "http://127.0.0.1:15000"},
            "netns": {"type": "str", "default": ""},
            "probe_command": {"type": "list", "elements": "str", "default": []},
            "health_timeout": {"type": "float", "default": 15.0},
            "state": {"type": "str", "choices": ["present", "rollback"], "default": "present"},
        },
        required_if=[("state", "present", ("archive", "version"))],
        supports_check_mode=True,
    )
    p = module.params
    root = p["root"]
    before = current_version(root)
    if p["state"] == "rollback":
        if module.check_mode:
            module.exit_json(changed=os.path.islink(os.path.join(root, "previous")), current=before, previous=before)
        result = rollback(root)
    else:
        if module.check_mode or before == p["version"]:
            module.exit_json(changed=before != p["version"], current=before, previous=before)
        os.makedirs(root, exist_ok=True)
        staged = _unpack(module, root, [p["archive"]])
        current = os.path.join(root, "current")
        steps = [
            (b["version"], _unpack(module, root, [p["archive"], b["archive"]], base=current)) for b in p["bridges"]
        ]
        result = activate(
            root, staged, p["version"], p["keep"], p["validate_command"] or None, _health(p), bridges=steps
        )
    if result["error"]:
        module.fail_json(
            msg=f"version {p['version']} refused: {result['error']}",
            changed=result["changed"],
            current=result["current"],
            rolled_back=result["rolled_back"],
        )
    module.exit_json(
        changed=result["changed"], current=result["current"], previous=result["previous"], rolled_back=False
    )


def _unpack(module: AnsibleModule, root: str, archives: list[str], base: str | None = None) -> str:
    """A staging directory next to `root`'s versions: a copy of `base` (if any), then each archive over it."""
    staged = tempfile.mkdtemp(prefix=".staging-", dir=root)
    if base and os.path.isdir(base):
        shutil.copytree(base, staged, dirs_exist_ok=True)
    for path in archives:
        with tarfile.open(path) as archive:
            members = archive.getmembers()
            unsafe = [
                m.name for m in members if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in m.name
            ]
            if unsafe:
                module.fail_json(msg=f"archive holds unsafe entries: {unsafe}")
            archive.extractall(staged, members=members)
    return staged


def _health(p: dict):
    if not p["health_check"]:
        return None
    probe = p["probe_command"] or None
    return lambda version: proxy_health(version, p["admin_url"], p["netns"] or None, probe, p["health_timeout"])


if __name__ == "__main__":
    main()
