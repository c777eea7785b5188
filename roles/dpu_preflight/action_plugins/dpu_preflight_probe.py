"""Run the dpu_preflight_probe module, in this process when the target is the controller itself.

The probe only reads files (sysfs, procfs, the module tree). A target that is the controller (local connection,
no become) is read here with the module's own probe() after the module's own argument checks: starting a module
costs more than the probe. Any other target runs the module.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from dpumesh.inprocess import is_controller, module_file

MODULE = "dpu_preflight_probe"


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if not is_controller(self._connection.transport, self._play_context.become):
            return {**result, **self._execute_module(MODULE, task_vars=task_vars)}
        module = module_file(self._shared_loader_obj.module_loader.find_plugin(MODULE))
        checked = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(dict(self._task.args))
        if checked.error_messages:
            return {**result, "failed": True, "msg": f"{MODULE}: " + "; ".join(checked.error_messages)}
        return {**result, "changed": False, **module.probe(checked.validated_parameters)}
