"""Run the dpu_preflight_probe module, in this process when the target is the controller itself.

The probe only reads files (sysfs, procfs, the module tree). A target that is the controller (local connection,
no become) is read here with the module's own probe() after the module's own argument checks: starting a module
costs more than the probe. Any other target runs the module.

With ``report`` (the role's one check task) the plugin also does what would otherwise be three more tasks per
host: it refuses a malformed configuration before the host is read (``report.config_problems``), adds the
inventory's findings to the probe's (``report.relation``, the SoC's reachability), prints the findings table,
and fails with what to fix when a finding failed. The table is the task's whole output, as the printed table.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from dpumesh.inprocess import is_controller, module_file

MODULE = "dpu_preflight_probe"


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        report = args.pop("report", None)
        if report is not None:
            problems = str(report.get("config_problems") or "").strip()
            if problems:
                return {**result, "failed": True, "msg": problems}
        probed = self._probe(args, task_vars)
        if report is None or probed.get("failed"):
            return {**result, **probed}
        return {**result, **_report(probed, report)}

    def _probe(self, args: dict[str, Any], task_vars) -> dict[str, Any]:
        if not is_controller(self._connection.transport, self._play_context.become):
            return self._execute_module(MODULE, module_args=args, task_vars=task_vars)
        module = module_file(self._shared_loader_obj.module_loader.find_plugin(MODULE))
        checked = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(args)
        if checked.error_messages:
            return {"failed": True, "msg": f"{MODULE}: " + "; ".join(checked.error_messages)}
        return {"changed": False, **module.probe(checked.validated_parameters)}


def _report(probed: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The findings table as the task's message (its only output, as a printed table), failed when a row failed."""
    findings = [*probed["findings"], report["relation"], *_soc_findings(report.get("soc") or {})]
    table = _table(report["title"], findings)
    failed = [f for f in findings if f["status"] == "FAIL"]
    if failed:
        fixes = " ".join(f"[{f['check']}: found {f['found']}, needed {f['needed']} -> {f['fix']}]" for f in failed)
        stop = f"{report['host']} cannot take the requested configuration: {fixes}"
        return {"changed": False, "failed": True, "msg": "\n".join(table) + "\n" + stop}
    return {"changed": False, "msg": table, "_ansible_verbose_always": True}


def _soc_findings(soc: dict[str, Any]) -> list[dict[str, Any]]:
    """Whether the host's one SoC answers: its ping result when it was pinged, else its own probe in this play."""
    if not soc.get("checked"):
        return []
    check = f"SoC {soc['name']} reachable"
    ping = soc.get("ping") or {}
    if ping and not ping.get("skipped"):
        down = bool(ping.get("unreachable") or ping.get("failed"))
        return [
            {
                "check": check,
                "status": "FAIL" if down else "ok",
                "found": ping.get("msg") or "answers",
                "needed": "answers ping over its connection",
                "fix": "check ansible_host/ansible_user of the SoC and that SSH and python3 work on it",
            }
        ]
    if soc.get("in_play"):
        # The SoC runs its own probe in the same task, which stops every host when the SoC fails or is unreachable.
        found = "checked by its own probe"
        return [{"check": check, "status": "ok", "found": found, "needed": "answers over its connection", "fix": ""}]
    return []


def _table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    """The findings as aligned columns: check, status, found, needed."""
    widths = [
        max([5, *(len(r["check"]) for r in rows)]),
        max([6, *(len(r["status"]) for r in rows)]),
        max([5, *(len(str(r["found"])) for r in rows)]),
    ]

    def line(check: Any, status: Any, found: Any, needed: Any) -> str:
        padded = (str(cell).ljust(width) for cell, width in zip((check, status, found), widths, strict=True))
        return "  ".join(padded) + f"  {needed}"

    return [f"preflight {title}", line("check", "status", "found", "needed")] + [
        line(r["check"], r["status"], r["found"], r["needed"]) for r in rows
    ]
