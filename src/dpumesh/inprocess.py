"""A module's own code run in the Ansible controller's process, for a task whose target is the controller.

Starting a module costs about 0.35 s of CPU here. For a read-only check on a target that is the controller
itself, the action plugins of `plugins/action` and of the roles import the module file once and call its
functions; every other target runs the module as usual.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from types import ModuleType


def is_controller(transport: str, become: bool) -> bool:
    """Whether a task's target is the controller itself as the controller's own user: a local connection
    without become (every host of `inventories/lab`)."""
    return transport == "local" and not become


@cache
def module_file(path: str) -> ModuleType:
    """The module file at `path`, imported once per controller process."""
    name = "_dpumesh_inprocess_" + "".join(c if c.isalnum() else "_" for c in path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
