"""Run the dpu_preflight_probe module, in this process when the target is the controller itself.

The probe only reads files (sysfs, procfs, the module tree). A target that is the controller (local connection,
no become) is read here with the module's own probe() after the module's own argument checks: starting a module
costs more than the probe. Any other target runs the module.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

MODULE = "dpu_preflight_probe"


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport != "local" or self._play_context.become:
            return {**result, **self._execute_module(MODULE, task_vars=task_vars)}
        module = _load_module(self._shared_loader_obj.module_loader.find_plugin(MODULE))
        checked = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(dict(self._task.args))
        if checked.error_messages:
            return {**result, "failed": True, "msg": f"{MODULE}: " + "; ".join(checked.error_messages)}
        return {**result, "changed": False, **module.probe(checked.validated_parameters)}


@cache
def _load_module(path: str):
    spec = importlib.util.spec_from_file_location(f"_dpumesh_{MODULE}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
