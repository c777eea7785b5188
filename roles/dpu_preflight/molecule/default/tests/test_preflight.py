"""Preflight reads only: after converge, check mode and the failure cases the host is untouched."""

testinfra_hosts = ["dpu-preflight"]


def test_fake_card_is_untouched(host):
    numvfs = host.file("/srv/fake/good/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs")
    assert numvfs.content_string.strip() == "0"
    hugepages = host.file("/srv/fake/good/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
    assert hugepages.content_string.strip() == "0"


def test_nothing_configured(host):
    for path in ("/etc/dpumesh", "/etc/modprobe.d/dpumesh.conf", "/etc/default/grub.d/dpumesh.cfg"):
        assert not host.file(path).exists, path
    assert not host.run("find /etc /usr/local -newer /srv/fake/good/proc/cmdline -type f").stdout.strip()
