"""A role's preflight in one task: its variables against its argument specs, then its settings.

The variables are checked first, as ``ansible.builtin.validate_argument_spec`` checks them (same messages). Only
when they pass is the task variable named by ``problems_var`` evaluated: the role's list of problems with its
settings, each naming the variable at fault, so a value of the wrong type is reported as such and not as a
wrong value. Any problem fails the task with ``fail_msg`` and the problems, one per line.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action.validate_argument_spec import ActionModule as ValidateArgumentSpec


class ActionModule(ValidateArgumentSpec):
    _VALID_ARGS = frozenset(("argument_spec", "problems_var", "fail_msg"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars if task_vars is not None else {}
        name = self._task.args.get("problems_var")
        if not name or name not in task_vars:
            raise AnsibleActionFail(
                "dpumesh_role_check: 'problems_var' must name a task variable (the list of problems)"
            )
        result = super().run(tmp, task_vars)
        if result.get("failed"):
            return result
        problems = self._templar.template(task_vars[name])
        if not isinstance(problems, list):
            raise AnsibleActionFail(
                f"dpumesh_role_check: {name} must be a list of problems, not {type(problems).__name__}"
            )
        if problems:
            heading = self._task.args.get("fail_msg") or "Problems"
            lines = "\n- ".join(str(problem) for problem in problems)
            return {**result, "failed": True, "problems": problems, "msg": f"{heading}:\n- {lines}"}
        return {**result, "changed": False, "problems": [], "msg": "The variables and settings passed"}
