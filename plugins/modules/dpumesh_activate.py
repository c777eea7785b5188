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
"""

import os
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.dpumesh_activate import activate, current_version, rollback


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "archive": {"type": "path"},
            "version": {"type": "str"},
            "keep": {"type": "int", "default": 5},
            "validate_command": {"type": "list", "elements": "str", "default": []},
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
        staged = tempfile.mkdtemp(prefix=".staging-", dir=root)
        with tarfile.open(p["archive"]) as archive:
            members = archive.getmembers()
            unsafe = [
                m.name for m in members if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in m.name
            ]
            if unsafe:
                module.fail_json(msg=f"archive holds unsafe entries: {unsafe}")
            archive.extractall(staged, members=members)
        result = activate(root, staged, p["version"], p["keep"], p["validate_command"] or None)
    if result["error"]:
        module.fail_json(msg=f"version {p['version']} refused: {result['error']}", current=result["current"])
    module.exit_json(changed=result["changed"], current=result["current"], previous=result["previous"])


if __name__ == "__main__":
    main()
