"""The preflight of Kubernetes roles in one task: each role's variables against its argument specs, then its settings.

For each role of ``roles`` (next to the role running the task, or on the roles path) the variables are resolved
from its ``vars/main.yml``, then the task's variables (inventory, extra vars, facts), then its
``defaults/main.yml``, with the roles it depends on below its own. Unlike Ansible, the role's vars come before
extra vars: they hold only the roles' internal ``_``-prefixed variables. They are checked against the
role's ``meta/argument_specs.yml`` (entry point ``main``) as ``ansible.builtin.validate_argument_spec`` checks
them, with the same messages; only a role whose variables pass has its settings checked
(``dpumesh.k8s.role_checks``), so a value of the wrong type is reported as such and not as a wrong value. Every
role is checked before the task fails, once, with every problem of every role.

The stage playbooks check all the Kubernetes roles in one task; each role's own preflight checks that role.
"""

from __future__ import annotations

from collections import ChainMap
from pathlib import Path

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from dpumesh.k8s.role_checks import ROLE_CHECKS


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("roles",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars if task_vars is not None else {}
        roles = self._task.args.get("roles")
        if not isinstance(roles, list) or not roles:
            raise AnsibleActionFail("dpumesh_k8s_preflight: 'roles' must be a list of role names")
        sections = []
        for role in roles:
            sections += self._check_role(self._role_dir(role), task_vars)
        if sections:
            return {**result, "failed": True, "changed": False, "msg": "\n".join(sections)}
        return {**result, "changed": False, "msg": f"The variables and settings of {', '.join(roles)} passed"}

    def _check_role(self, role_dir: Path, task_vars) -> list[str]:
        """The failure sections of one role: its argument errors, else its settings problems."""
        role = role_dir.name
        spec = self._load(role_dir / "meta" / "argument_specs.yml")
        options = ((spec.get("argument_specs") or {}).get("main") or {}).get("options") or {}
        chain = self._with_dependencies(role_dir)
        variables = ChainMap(
            *(self._load(d / "vars" / "main.yml") for d in chain),
            task_vars,
            *(self._load(d / "defaults" / "main.yml") for d in chain),
        )
        templar = self._templar.copy_with_new_env(available_variables=variables)
        provided = templar.template({name: variables[name] for name in options if name in variables})
        checked = ArgumentSpecValidator(options).validate(provided, validate_role_argument_spec=True)
        if checked.error_messages:
            return [f"{role}: Validation of arguments failed:\n" + "\n".join(checked.error_messages)]
        check = ROLE_CHECKS.get(role)
        if check is None:
            return []
        reads = templar.template({name: variables[name] for name in check.reads if name in variables})
        problems = check.check({**reads, **checked.validated_parameters})
        if not problems:
            return []
        return [f"{check.heading}:\n- " + "\n- ".join(str(problem) for problem in problems)]

    def _with_dependencies(self, role_dir: Path) -> list[Path]:
        """The role, then the roles it depends on (meta/main.yml), each once: whose variables it sees."""
        chain = [role_dir]
        for found in chain:
            for dependency in self._load(found / "meta" / "main.yml").get("dependencies") or []:
                name = dependency.get("role") if isinstance(dependency, dict) else dependency
                path = self._role_dir(str(name))
                if path not in chain:
                    chain.append(path)
        return chain

    def _role_dir(self, name: str) -> Path:
        """The role next to the one running this task, else the first of the roles path that has it."""
        here = [Path(self._task._role._role_path).parent] if self._task._role else []
        for parent in [*here, *(Path(p) for p in C.DEFAULT_ROLES_PATH)]:
            if (parent / name / "meta" / "argument_specs.yml").is_file():
                return parent / name
        raise AnsibleActionFail(f"dpumesh_k8s_preflight: no role {name} with meta/argument_specs.yml")

    def _load(self, path: Path) -> dict:
        return (self._loader.load_from_file(str(path), trusted_as_template=True) or {}) if path.is_file() else {}
