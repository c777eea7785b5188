"""Ansible connection that runs tasks in a local podman container by entering its namespaces.

`podman exec` costs a few hundred milliseconds and the podman connection makes three or four
of them per module task, which made most of a role scenario's run time. Entering the
container's namespaces with nsenter costs milliseconds, and modules are piped to Python
(pipelining), so a module task is one command.

Commands see what `podman exec` shows them: the container's files, network, hostname,
processes and environment, as root. Unlike `podman exec` they keep the controller's cgroup
and capability set, as Ansible has on a real host.
"""

import shlex
import shutil
import subprocess
from pathlib import Path

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible.utils.display import Display

DOCUMENTATION = """
name: podman_nsenter
short_description: Run tasks in a local podman container through nsenter
description:
  - Runs commands in the namespaces of the container's PID 1, read from a PID file that
    .config/molecule/create.yml has podman write (podman run --pidfile).
options:
  remote_addr:
    description: Name of the container.
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  pid_dir:
    description: Directory holding one <container>.pid file per container.
    required: true
    env:
      - name: MOLECULE_EPHEMERAL_DIRECTORY
"""

display = Display()

NAMESPACES = ("--mount", "--uts", "--ipc", "--net", "--pid")


class Connection(ConnectionBase):
    transport = "podman_nsenter"
    has_pipelining = True
    always_pipeline_modules = True

    def _connect(self):
        if not self._connected:
            self._name = name = self.get_option("remote_addr")
            pid_file = Path(self.get_option("pid_dir"), f"{name}.pid")
            try:
                self._pid = int(pid_file.read_text())
                # What `podman exec` would hand the command: the container's own environment.
                environ = Path(f"/proc/{self._pid}/environ").read_bytes()
            except (OSError, ValueError) as error:
                raise AnsibleConnectionFailure(f"container {name} is not running ({pid_file}: {error})") from error
            self._env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
            self._nsenter = shutil.which("nsenter")
            if not self._nsenter:
                raise AnsibleConnectionFailure("nsenter not found on the controller (util-linux)")
            display.vvv(f"NSENTER into container {name} (PID {self._pid})", host=name)
            self._connected = True
        return self

    def _run(self, argv, in_data=None):
        command = [self._nsenter, f"--target={self._pid}", *NAMESPACES, "--", *argv]
        display.vvv(f"EXEC {shlex.join(argv)}", host=self._name)
        done = subprocess.run(
            [to_bytes(arg) for arg in command],
            input=in_data or b"",  # never the controller's stdin
            capture_output=True,
            env=self._env,
            check=False,
        )
        return done.returncode, done.stdout, done.stderr

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=True):
        return self._run(shlex.split(to_text(cmd, errors="surrogate_or_strict")), in_data)

    @ensure_connect
    def put_file(self, in_path, out_path):
        rc, _, stderr = self._run(["sh", "-c", 'cat >"$1"', "sh", out_path], Path(in_path).read_bytes())
        if rc:
            raise AnsibleConnectionFailure(f"could not write {out_path}: {to_text(stderr)}")

    @ensure_connect
    def fetch_file(self, in_path, out_path):
        rc, content, stderr = self._run(["cat", in_path])
        if rc:
            raise AnsibleConnectionFailure(f"could not read {in_path}: {to_text(stderr)}")
        Path(out_path).write_bytes(content)

    def close(self):
        self._connected = False
