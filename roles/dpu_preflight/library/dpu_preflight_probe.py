#!/usr/bin/python
"""Read what a DPU host or SoC offers (sysfs, procfs, kernel modules) and judge it
against the requested configuration. Reads only; never changes the host."""

from __future__ import annotations

import os
import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: dpu_preflight_probe
short_description: Inspect a DPU host or SoC and report findings against the requested configuration
description:
  - Reads sysfs, procfs and the kernel module directory below configurable roots (tests point
    them at a fake tree) and returns one finding per check. Changes nothing.
options:
  kind:
    description: C(host) (Kubernetes worker with the card) or C(soc) (the card's own Linux).
    type: str
    required: true
  sysfs_root: {description: Where sysfs is mounted., type: path, default: /sys}
  procfs_root: {description: Where procfs is mounted., type: path, default: /proc}
  modules_root: {description: Kernel module tree (per release below it)., type: path, default: /lib/modules}
  vf_provider: {description: C(sriov) checks the card; C(veth) (lab) skips hardware checks., type: str, default: sriov}
  model: {description: "Model entry: name, vendor, device (hex ids).", type: dict, default: {}}
  pci_address: {description: Expected PCI address of the card; empty to search., type: str, default: ""}
  pf: {description: Physical function interface name., type: str, default: ""}
  num_vfs: {description: Requested number of VFs., type: int, default: 0}
  hugepages_mb: {description: Requested hugepage memory in MiB., type: int, default: 0}
  min_free_memory_mb: {description: Memory that must stay outside hugepages, in MiB., type: int, default: 2048}
  min_kernel: {description: Lowest kernel release accepted (major.minor)., type: str, default: "5.4"}
  modules: {description: Kernel modules that must be available., type: list, elements: str, default: []}
"""


def _read(path: str, default: str | None = None) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return default


def _kernel_tuple(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", release)[:2])


def _meminfo(procfs: str) -> dict[str, int]:
    values = {}
    for line in (_read(os.path.join(procfs, "meminfo"), "") or "").splitlines():
        key, _, rest = line.partition(":")
        number = rest.split()
        if number and number[0].isdigit():
            values[key.strip()] = int(number[0])
    return values


def _pci_devices(sysfs: str) -> list[dict[str, str]]:
    base = os.path.join(sysfs, "bus", "pci", "devices")
    devices = []
    for address in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        path = os.path.join(base, address)
        devices.append(
            {
                "address": address,
                "vendor": (_read(os.path.join(path, "vendor"), "") or "").lower(),
                "device": (_read(os.path.join(path, "device"), "") or "").lower(),
            }
        )
    return devices


def _module_available(name: str, sysfs: str, modules_dir: str) -> bool:
    name = name.replace("-", "_")
    if os.path.isdir(os.path.join(sysfs, "module", name)):
        return True  # loaded (or built in with parameters)
    pattern = re.compile(r"(^|/)" + re.escape(name).replace("_", "[-_]") + r"\.ko(\.[a-z]+)?:?")
    for listing in ("modules.builtin", "modules.dep"):
        text = _read(os.path.join(modules_dir, listing), "") or ""
        if any(pattern.search(line.split(":", 1)[0] + ":") for line in text.splitlines()):
            return True
    return False


class Findings:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, check: str, ok: bool | None, found: str, needed: str, fix: str = "") -> None:
        status = "n/a" if ok is None else ("ok" if ok else "FAIL")
        self.items.append(
            {"check": check, "status": status, "found": found, "needed": needed, "fix": "" if ok or ok is None else fix}
        )


def probe(p: dict) -> dict:
    sysfs, procfs = p["sysfs_root"], p["procfs_root"]
    findings = Findings()
    facts: dict = {}
    hardware = p["kind"] == "host" and p["vf_provider"] == "sriov"

    release = _read(os.path.join(procfs, "sys", "kernel", "osrelease"), "") or os.uname().release
    facts["kernel_release"] = release
    findings.add(
        "kernel version",
        _kernel_tuple(release) >= _kernel_tuple(p["min_kernel"]),
        release,
        f">= {p['min_kernel']}",
        f"upgrade the kernel to {p['min_kernel']} or later",
    )

    meminfo = _meminfo(procfs)
    total_mb = meminfo.get("MemTotal", 0) // 1024
    facts["mem_total_mb"] = total_mb
    wanted = p["hugepages_mb"] + p["min_free_memory_mb"]
    findings.add(
        "memory for hugepages",
        total_mb >= wanted,
        f"{total_mb} MiB RAM",
        f"{p['hugepages_mb']} MiB hugepages + {p['min_free_memory_mb']} MiB free",
        f"request at most {max(total_mb - p['min_free_memory_mb'], 0)} MiB of hugepages or add memory",
    )

    flags = set()
    for line in (_read(os.path.join(procfs, "cpuinfo"), "") or "").splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    virt = sorted(flags & {"vmx", "svm"})
    facts["cpu_virtualization"] = virt
    findings.add(
        "CPU virtualization",
        bool(virt) if hardware else None,
        ",".join(virt) or "none",
        "vmx or svm",
        "enable VT-x/AMD-V in the firmware setup",
    )

    groups_dir = os.path.join(sysfs, "kernel", "iommu_groups")
    groups = len(os.listdir(groups_dir)) if os.path.isdir(groups_dir) else 0
    facts["iommu_groups"] = groups
    findings.add(
        "IOMMU enabled",
        groups > 0 if hardware else None,
        f"{groups} IOMMU groups",
        "> 0",
        "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on (dpu_host sets it)",
    )

    model = p["model"]
    if hardware:
        devices = _pci_devices(sysfs)
        ids = (str(model.get("vendor", "")).lower(), str(model.get("device", "")).lower())
        matches = [d["address"] for d in devices if (d["vendor"], d["device"]) == ids]
        if p["pci_address"]:
            ok = p["pci_address"] in matches
            found = p["pci_address"] + (" matches" if ok else " is not a " + model.get("name", "?"))
        else:
            ok, found = bool(matches), ", ".join(matches) or "none"
        facts["dpu_pci_addresses"] = matches
        findings.add(
            f"DPU {model.get('name', '?')} ({ids[0]}:{ids[1]})",
            ok,
            found,
            p["pci_address"] or "present",
            "check the card is seated and dpu_preflight_model / dpu_host_pci_address in the inventory",
        )

        pf_dev = os.path.join(sysfs, "class", "net", p["pf"], "device")
        total = _read(os.path.join(pf_dev, "sriov_totalvfs"))
        facts["pf_sriov_totalvfs"] = int(total) if total and total.isdigit() else None
        findings.add(
            f"PF {p['pf']} present",
            os.path.isdir(pf_dev),
            "yes" if os.path.isdir(pf_dev) else "no",
            "present",
            "set dpu_host_pf to the card's physical function (ip -br link)",
        )
        findings.add(
            "SR-IOV VFs",
            total is not None and int(total) >= p["num_vfs"],
            f"sriov_totalvfs={total if total is not None else 'missing'}",
            f">= {p['num_vfs']}",
            f"lower dpu_host_num_vfs to at most {total}" if total else "enable SR-IOV in the card firmware",
        )
    else:
        for check in ("DPU card", "PF and SR-IOV VFs"):
            findings.add(check, None, "not checked", "veth lab" if p["kind"] == "host" else "n/a on a SoC")

    modules_dir = os.path.join(p["modules_root"], release)
    for name in p["modules"]:
        ok = _module_available(name, sysfs, modules_dir)
        findings.add(
            f"kernel module {name}",
            ok,
            "available" if ok else "missing",
            "available",
            f"install the package that ships {name} for kernel {release}",
        )
    return {"facts": facts, "findings": findings.items}


# Module level, so the action plugin (action_plugins/dpu_preflight_probe.py) validates the same options when it
# runs probe() in its own process.
ARGUMENT_SPEC = {
    "kind": {"type": "str", "required": True, "choices": ["host", "soc"]},
    "sysfs_root": {"type": "path", "default": "/sys"},
    "procfs_root": {"type": "path", "default": "/proc"},
    "modules_root": {"type": "path", "default": "/lib/modules"},
    "vf_provider": {"type": "str", "default": "sriov", "choices": ["sriov", "veth"]},
    "model": {"type": "dict", "default": {}},
    "pci_address": {"type": "str", "default": ""},
    "pf": {"type": "str", "default": ""},
    "num_vfs": {"type": "int", "default": 0},
    "hugepages_mb": {"type": "int", "default": 0},
    "min_free_memory_mb": {"type": "int", "default": 2048},
    "min_kernel": {"type": "str", "default": "5.4"},
    "modules": {"type": "list", "elements": "str", "default": []},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = probe(module.params)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
