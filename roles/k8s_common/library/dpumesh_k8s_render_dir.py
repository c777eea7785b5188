#!/usr/bin/python
"""Make a directory hold exactly the given rendered files, in one module call."""

from __future__ import annotations

import fnmatch
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: dpumesh_k8s_render_dir
short_description: Write rendered manifests into a directory and prune the ones no longer rendered
description:
  - Each file is written to a temporary file in the same directory and renamed into place, so a
    reader never sees a partial file. Unchanged files are not touched. Files matching I(prune_glob)
    that are not in I(files) are removed. Supports check mode and diff.
options:
  path: {description: Directory to write into (created when missing)., type: path, required: true}
  files:
    description: "List of {name, content}; name is a plain file name."
    type: list
    elements: dict
    required: true
  prune_glob: {description: Files matching this that are not in I(files) are removed., type: str, default: "*.yaml"}
  mode: {description: Mode of the files written., type: str, default: "0644"}
  fingerprint:
    description:
      - Digest of what produced I(files) (the action plugin dpumesh_k8s_manifests computes it). Recorded in
        C(.dpumesh-fingerprint) in I(path) once the files are written; recording it alone is not a change.
    type: str
    default: ""
  verify_only:
    description:
      - Write nothing; return C(verified) true when I(fingerprint) is the recorded one and the directory holds
        exactly I(files) (every file's content, nothing to prune).
    type: bool
    default: false
"""

FINGERPRINT = ".dpumesh-fingerprint"
DEFAULT_PRUNE_GLOB = "*.yaml"


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write(module, directory, name, content, mode):
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(content)
    os.chmod(temporary, mode)
    module.atomic_move(temporary, os.path.join(directory, name))


def compare(directory, wanted, prune_glob=DEFAULT_PRUNE_GLOB):
    """(written, removed, changed): the files to write, the ones to prune, and whether anything would change."""
    existing = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    written = [n for n, c in sorted(wanted.items()) if _read(os.path.join(directory, n)) != c]
    removed = [
        n
        for n in existing
        if n not in wanted and fnmatch.fnmatch(n, prune_glob) and os.path.isfile(os.path.join(directory, n))
    ]
    return written, removed, bool(written or removed or not os.path.isdir(directory))


def verify(directory, files, fingerprint, prune_glob=DEFAULT_PRUNE_GLOB):
    """The verify_only result; the dpumesh_k8s_manifests action calls it directly when the target is the
    controller itself."""
    written, removed, changed = compare(directory, {f["name"]: f["content"] for f in files}, prune_glob)
    verified = not changed and _recorded(directory, fingerprint) == fingerprint != ""
    return {"changed": False, "verified": verified, "written": written, "removed": removed}


def _recorded(directory, fingerprint):
    return _read(os.path.join(directory, FINGERPRINT)) if fingerprint else None


# Module level, so the action plugin (action_plugins/dpumesh_k8s_render_dir.py) checks the same options when it
# compares in its own process.
ARGUMENT_SPEC = {
    "path": {"type": "path", "required": True},
    "files": {"type": "list", "elements": "dict", "required": True},
    "prune_glob": {"type": "str", "default": DEFAULT_PRUNE_GLOB},
    "mode": {"type": "str", "default": "0644"},
    "fingerprint": {"type": "str", "default": ""},
    "verify_only": {"type": "bool", "default": False},
}


def wanted_files(files):
    """{name: content} of the files option; ValueError naming an entry that is not a plain name and a string."""
    wanted = {}
    for entry in files:
        name, content = entry.get("name"), entry.get("content")
        if not name or os.path.basename(name) != name or not isinstance(content, str):
            raise ValueError(f"files: entry {name!r} needs a plain file name and string content")
        wanted[name] = content
    return wanted


def unchanged(directory, wanted, fingerprint, prune_glob=DEFAULT_PRUNE_GLOB):
    """The module's result when the directory already holds exactly `wanted` and records `fingerprint` (or none
    is given): nothing to write; None when something would change."""
    changed = compare(directory, wanted, prune_glob)[2]
    recorded = _recorded(directory, fingerprint)
    if changed or (fingerprint and recorded != fingerprint):
        return None
    return {"changed": False, "verified": recorded == fingerprint != "", "written": [], "removed": [], "diff": []}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    directory, mode, prune_glob = module.params["path"], int(module.params["mode"], 8), module.params["prune_glob"]
    try:
        wanted = wanted_files(module.params["files"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if module.params["verify_only"]:
        module.exit_json(**verify(directory, module.params["files"], module.params["fingerprint"], prune_glob))
    written, removed, changed = compare(directory, wanted, prune_glob)
    diff = [
        {
            "before_header": os.path.join(directory, n),
            "after_header": os.path.join(directory, n),
            "before": _read(os.path.join(directory, n)) or "",
            "after": wanted.get(n, ""),
        }
        for n in written + removed
    ]
    fingerprint = module.params["fingerprint"]
    recorded = _recorded(directory, fingerprint)
    verified = not changed and recorded == fingerprint != ""
    if not module.check_mode:
        if changed:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        for name in written:
            _write(module, directory, name, wanted[name], mode)
        for name in removed:
            os.unlink(os.path.join(directory, name))
        if fingerprint and recorded != fingerprint:  # after the files: a record always describes files on disk
            _write(module, directory, FINGERPRINT, fingerprint, mode)
    module.exit_json(changed=changed, verified=verified, written=written, removed=removed, diff=diff)


if __name__ == "__main__":
    main()
