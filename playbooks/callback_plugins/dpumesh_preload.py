"""Load Ansible's Jinja filters and tests, and build its Jinja lexer, once, on the controller, before any task runs.

Ansible runs each task in a process forked from the controller, and loads every filter and test plugin
the first time a template asks for one. Loaded in the controller, they are inherited by every fork;
left to the forks, each task imports them all again (about 0.2 s per task and host, most of a trivial
task's time). The same holds for the lexer Ansible's Jinja environment builds for its first template
(a few milliseconds per fork): one template rendered here builds it before the first fork.

Each fork also inherits the controller's Python objects, hundreds of thousands of them. When the fork's
cyclic garbage collector runs a full collection it walks all of them, which touches (and so copies) every
page they live on. Right before each fork (`v2_runner_on_start`, sent just before the worker starts), the
controller's objects are moved out of the collector's reach (`gc.freeze`); a fork then only collects what
it allocates itself. The next task's start gives them back to the controller's collector (`gc.unfreeze`),
so the controller's own garbage is still collected.
"""

from __future__ import annotations

import gc

from ansible.parsing.dataloader import DataLoader
from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import filter_loader, test_loader
from ansible.template import Templar, trust_as_template


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "dpumesh_preload"
    CALLBACK_NEEDS_ENABLED = False

    def v2_playbook_on_start(self, playbook) -> None:
        for loader in (filter_loader, test_loader):
            list(loader.all())
        Templar(loader=DataLoader(), variables={"lexer": 1}).template(trust_as_template("{{ lexer }}"))

    def v2_runner_on_start(self, host, task) -> None:
        gc.freeze()

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        gc.unfreeze()

    def v2_playbook_on_handler_task_start(self, task) -> None:
        gc.unfreeze()
