"""Load Ansible's Jinja filters and tests, and build its Jinja lexer, once, on the controller, before any task runs.

Ansible runs each task in a process forked from the controller, and loads every filter and test plugin
the first time a template asks for one. Loaded in the controller, they are inherited by every fork;
left to the forks, each task imports them all again (about 0.2 s per task and host, most of a trivial
task's time). The same holds for the lexer Ansible's Jinja environment builds for its first template
(a few milliseconds per fork): one template rendered here builds it before the first fork.
"""

from __future__ import annotations

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
