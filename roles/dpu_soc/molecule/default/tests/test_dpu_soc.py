"""The SoC after converge: directories, hugepages, units running containers, and how they react."""

import json
import time

testinfra_hosts = ["dpu-soc"]

SERVICES = ("dataplane", "sds", "dpu-proxy")
IMAGES = ("dataplane", "dpu-proxy")  # sds runs the dataplane image (it carries the dpumesh package)


def started_at(host, service):
    return host.check_output(f"systemctl show -p ExecMainStartTimestampMonotonic --value dpumesh-{service}")


def wait_for(predicate, timeout=40):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(1)
    return False


def test_config_layout(host):
    for path, mode in (("/etc/dpumesh", 0o755), ("/etc/dpumesh/proxy/versions", 0o755), ("/etc/dpumesh/certs", 0o700)):
        directory = host.file(path)
        assert directory.is_directory, path
        assert directory.mode == mode, path


def test_hugepages(host):
    assert host.check_output("cat /srv/fake/soc/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") == "256"
    assert "vm.nr_hugepages = 256" in host.file("/etc/sysctl.d/90-dpumesh-hugepages.conf").content_string


def test_inotify_limits_raised_never_lowered(host):
    drop_in = host.file("/etc/sysctl.d/90-dpumesh-inotify.conf").content_string
    assert "fs.inotify.max_user_instances = 8192" in drop_in
    assert "fs.inotify.max_user_watches = 524288" in drop_in
    live = "/srv/fake/soc/proc/sys/fs/inotify"
    assert host.check_output(f"cat {live}/max_user_instances") == "8192"  # was 128
    assert host.check_output(f"cat {live}/max_user_watches") == "1048576"  # already higher: kept


def test_images_loaded_from_archives(host):
    for image in IMAGES:
        assert host.file(f"/var/lib/dpumesh/images/{image}.tar").exists
        assert host.run(f"podman image exists localhost/dpumesh/{image}:test").rc == 0


def test_pinned_image_runs_by_digest(host):
    digest = json.loads(host.file("/var/tmp/dpu-proxy.index.json").content_string)["manifests"][0]["digest"]
    pinned = f"localhost/dpumesh/dpu-proxy:test@{digest}"
    assert (
        f"  {pinned} /bin/sleep infinity" in host.file("/etc/systemd/system/dpumesh-dpu-proxy.service").content_string
    )
    image_id = host.check_output("podman inspect --format '{{.Image}}' dpumesh-dpu-proxy")
    assert host.check_output(f"podman image inspect --format '{{{{.Digest}}}}' {image_id}") == digest
    # The unpinned dataplane runs by tag.
    assert (
        "  localhost/dpumesh/dataplane:test /bin/sleep"
        in host.file("/etc/systemd/system/dpumesh-dataplane.service").content_string
    )


def test_units_enabled_active_and_running_containers(host):
    for service in SERVICES:
        unit = host.service(f"dpumesh-{service}")
        assert unit.is_enabled, service
        assert unit.is_running, service
        state = host.check_output(f"podman inspect --format '{{{{.State.Status}}}}' dpumesh-{service}")
        assert state == "running", service
        assert host.run(f"podman healthcheck run dpumesh-{service}").rc == 0, service


def test_unit_settings(host):
    unit = host.file("/etc/systemd/system/dpumesh-dpu-proxy.service").content_string
    for expected in (
        "Restart=always",
        "StartLimitBurst=5",
        "--log-driver=k8s-file --log-opt=max-size=20mb",
        "--health-on-failure=kill",
        "--volume=/etc/dpumesh/proxy:/etc/dpumesh/proxy:ro",
        "--volume=/run/dpumesh:/run/dpumesh \\",
        "--cap-add=NET_ADMIN",
        "--pull=never --network=host",
        "After=network-online.target dpumesh-dataplane.service dpumesh-sds.service\n",
        "Wants=dpumesh-sds.service\n",
        "ExecStartPre=/usr/bin/install -d -m 0700 /run/dpumesh\n",
    ):
        assert expected in unit, expected
    # The proxy takes every certificate from the SDS service: only that one mounts the keys.
    assert "/etc/dpumesh/certs" not in unit
    sds = host.file("/etc/systemd/system/dpumesh-sds.service").content_string
    assert "--volume=/etc/dpumesh/certs:/etc/dpumesh/certs:ro \\" in sds
    assert "--volume=/run/dpumesh:/run/dpumesh \\" in sds
    assert "--cap-add" not in sds
    assert "  localhost/dpumesh/dataplane:test /bin/sleep infinity" in sds
    assert host.file("/run/dpumesh").mode == 0o700
    log_opts = host.check_output("podman inspect --format '{{.HostConfig.LogConfig.Size}}' dpumesh-dpu-proxy")
    assert log_opts == "20MB"


def test_new_config_version_restarts_dataplane_only(host):
    assert host.service("dpumesh-dataplane-config.path").is_running
    dataplane_before, proxy_before = started_at(host, "dataplane"), started_at(host, "dpu-proxy")
    host.check_output(
        "mkdir -p /etc/dpumesh/proxy/versions/v1 && ln -sfn versions/v1 /etc/dpumesh/proxy/current.new"
        " && mv -T /etc/dpumesh/proxy/current.new /etc/dpumesh/proxy/current"
    )
    assert wait_for(lambda: started_at(host, "dataplane") != dataplane_before)
    assert wait_for(lambda: host.service("dpumesh-dataplane").is_running)
    assert started_at(host, "dpu-proxy") == proxy_before


def test_failing_health_check_restarts_the_service(host):
    restarts = int(host.check_output("systemctl show -p NRestarts --value dpumesh-dpu-proxy"))
    # The test dpu-proxy's health check needs proxy/versions (seen through its read-only mount); take it away.
    host.check_output("mv /etc/dpumesh/proxy/versions /etc/dpumesh/proxy/versions.away")
    try:
        assert wait_for(
            lambda: int(host.check_output("systemctl show -p NRestarts --value dpumesh-dpu-proxy")) > restarts
        )
    finally:
        host.check_output("mv /etc/dpumesh/proxy/versions.away /etc/dpumesh/proxy/versions")
    assert wait_for(lambda: host.run("podman healthcheck run dpumesh-dpu-proxy").rc == 0)
