"""What dpu_host leaves on a host with a (fake) SR-IOV card, after converge and the side-effect cases."""

testinfra_hosts = ["dpu-host"]

FAKE = "/srv/fake/host"
PF_DEVICE = f"{FAKE}/sys/bus/pci/devices/0000:3b:00.0"
KERNEL_ARGS = "intel_iommu=on iommu=pt default_hugepagesz=2M hugepagesz=2M hugepages=1024"


def read(host, path):
    return host.check_output(f"cat {path}")


def test_kernel_command_line_through_grub(host):
    dropin = host.file("/etc/default/grub.d/90-dpumesh.cfg")
    assert dropin.mode == 0o644
    assert f'GRUB_CMDLINE_LINUX="${{GRUB_CMDLINE_LINUX}} {KERNEL_ARGS}"' in dropin.content_string
    # What grub-mkconfig would put on the kernel line (written by the update command).
    assert read(host, "/boot/grub-cmdline-linux") == f"console=ttyS0 {KERNEL_ARGS}"


def test_running_kernel_left_alone_without_reboot_permission(host):
    assert KERNEL_ARGS not in read(host, f"{FAKE}/proc/cmdline")


def test_modules_persisted(host):
    assert host.file("/etc/modules-load.d/dpumesh.conf").content_string.splitlines()[1:] == ["vfio_pci", "mlx5_core"]
    assert "options" not in host.file("/etc/modprobe.d/dpumesh.conf").content_string


def test_hugepages_allocated(host):
    assert read(host, f"{FAKE}/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") == "1024"


def test_sysctls_persisted_and_applied(host):
    conf = host.file("/etc/sysctl.d/90-dpumesh.conf").content_string
    assert "net.ipv4.ip_forward = 1" in conf
    assert "vm.swappiness = 10" in conf
    assert read(host, f"{FAKE}/proc/sys/net/ipv4/ip_forward") == "1"
    assert read(host, f"{FAKE}/proc/sys/vm/swappiness") == "10"


def test_vf_unit_created_the_vfs(host):
    unit = host.service("dpumesh-sriov-vfs")
    assert unit.is_enabled
    assert unit.is_running or host.run("systemctl is-active dpumesh-sriov-vfs").stdout.strip() == "active"
    assert read(host, f"{PF_DEVICE}/sriov_numvfs") == "8"
    env = host.file("/etc/dpumesh/sriov-vfs.env").content_string
    for line in ("PF=ens1f0np0", "NUM_VFS=8", "VF_TRUST=on", "VF_SPOOFCHK=off", f"SYSFS_ROOT={FAKE}/sys"):
        assert line in env.splitlines()
    unit_file = host.file("/etc/systemd/system/dpumesh-sriov-vfs.service").content_string
    assert "EnvironmentFile=/etc/dpumesh/sriov-vfs.env" in unit_file
    assert "WantedBy=multi-user.target" in unit_file
    assert host.file("/usr/local/sbin/dpumesh-sriov-vfs").mode == 0o755


def test_vf_names_follow_pci_addresses(host):
    rules = [
        line
        for line in host.file("/etc/udev/rules.d/70-dpumesh-vf-names.rules").content_string.splitlines()
        if line.startswith("ACTION")
    ]
    assert len(rules) == 8
    # PF 0000:3b:00.0 with First VF Offset 2 and VF Stride 1.
    assert 'KERNELS=="0000:3b:00.2", NAME="ens1f0np0v0"' in rules[0]
    assert 'KERNELS=="0000:3b:00.7", NAME="ens1f0np0v5"' in rules[5]
    assert 'KERNELS=="0000:3b:01.1", NAME="ens1f0np0v7"' in rules[7]


def test_vf_count_changes_went_through_the_unit(host):
    """The side effect re-created the VFs 8 -> 12 and back, with permission to do so."""
    journal = host.check_output("journalctl -u dpumesh-sriov-vfs --no-pager -o cat")
    assert "ens1f0np0: 0 -> 8 VFs" in journal
    assert "ens1f0np0: 8 -> 12 VFs" in journal
    assert "ens1f0np0: 12 -> 8 VFs" in journal
