"""Read the mode and type of directories on the SoC, as lines "<mode>:<type>:<path>" (stat -c '%04a:%F:%n').

A missing path gives no line. On a target that is the controller itself (local connection, no become) the paths
are read in this process; other targets run one `stat` command for all of them. Reads only, in check mode too.
"""

from __future__ import annotations

import os
import stat

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from dpumesh.inprocess import is_controller

STAT_SCRIPT = 'for d; do stat -c "%04a:%F:%n" "$d" 2>/dev/null; done; true'


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("paths",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        paths = self._task.args.get("paths")
        if not isinstance(paths, list):
            raise AnsibleActionFail("dpu_soc_dir_modes: 'paths' (a list) is required")
        paths = [str(path) for path in paths]
        if is_controller(self._connection.transport, self._play_context.become):
            return {**result, "changed": False, "stdout_lines": [line for line in map(_describe, paths) if line]}
        ran = self._execute_module(
            "ansible.builtin.command", {"argv": ["sh", "-c", STAT_SCRIPT, "sh", *paths]}, task_vars=task_vars
        )
        if ran.get("failed"):
            return {**result, **ran}
        return {**result, "changed": False, "stdout_lines": ran.get("stdout_lines", [])}


# GNU stat's names of the file types (%F).
KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character special file"),
    (stat.S_ISBLK, "block special file"),
)


def _describe(path: str) -> str:
    try:
        found = os.lstat(path)
    except OSError:
        return ""
    regular = "regular empty file" if found.st_size == 0 else "regular file"
    kind = next((name for test, name in KINDS if test(found.st_mode)), regular)
    return f"{stat.S_IMODE(found.st_mode):04o}:{kind}:{path}"
