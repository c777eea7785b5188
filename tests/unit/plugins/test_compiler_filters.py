"""The compiler's Jinja filters give the compiler's own answers, through Ansible's templating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_filters_render_through_ansible(tmp_path):
    playbook = tmp_path / "p.yml"
    playbook.write_text(
        """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ {'id': 'reviews' | dpumesh_spiffe_id('shop', 'example.org'),
                      'http': 'http-web' | dpumesh_port_protocol,
                      'grpc': 'x' | dpumesh_port_protocol('grpc'),
                      'tcp': 'metrics' | dpumesh_port_protocol,
                      'cluster': 'reviews.shop.svc.cluster.local' | dpumesh_cluster_name(9080, 'v1')} | to_json }}"
"""
    )
    out = tmp_path / "out.json"
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    bindir = Path(sys.executable).parent
    result = subprocess.run(
        [
            str(bindir / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            str(playbook),
            "-e",
            f"out={out}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(out.read_text()) == {
        "id": "spiffe://example.org/ns/shop/sa/reviews",
        "http": "HTTP",
        "grpc": "GRPC",
        "tcp": "TCP",
        "cluster": "outbound|9080|v1|reviews.shop.svc.cluster.local",
    }
