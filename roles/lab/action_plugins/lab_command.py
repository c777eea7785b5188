"""Run a `dpumesh lab` command; on the controller itself, straight from this process.

The lab is this machine. On a target that is the controller (local connection, no become) the command runs as a
child of this process instead of inside ansible.builtin.command, whose module start costs more than an unchanged
`dpumesh lab apply`. Other targets run ansible.builtin.command. The result has command's keys (rc, stdout,
stderr and their lines); like command, nothing runs in check mode unless the task sets check_mode: false.
"""

from __future__ import annotations

import subprocess

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from dpumesh.inprocess import is_controller


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("argv",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        argv = self._task.args.get("argv")
        if not isinstance(argv, list) or not argv:
            raise AnsibleActionFail("lab_command: 'argv' (the command and its arguments, a list) is required")
        argv = [str(arg) for arg in argv]
        if self._task.check_mode:
            return {**result, "skipped": True, "changed": False, "msg": "check mode: the lab command does not run"}
        if not is_controller(self._connection.transport, self._play_context.become):
            return {**result, **self._execute_module("ansible.builtin.command", {"argv": argv}, task_vars=task_vars)}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        except OSError as exc:
            return {**result, "failed": True, "rc": 2, "cmd": argv, "msg": f"{argv[0]}: {exc.strerror}"}
        stdout, stderr = done.stdout.rstrip("\n"), done.stderr.rstrip("\n")
        result.update(
            cmd=argv,
            rc=done.returncode,
            stdout=stdout,
            stderr=stderr,
            stdout_lines=stdout.splitlines(),
            stderr_lines=stderr.splitlines(),
            changed=True,  # as command: the task's changed_when decides
        )
        if done.returncode != 0:
            result.update(failed=True, msg="non-zero return code")
        return result
