#!/usr/bin/python
"""Documentation of the dpumesh_compile action (the work happens in plugins/action)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dpumesh_compile
short_description: Compile the shared proxy and dataplane config of several DPU nodes at once, on the controller
description:
  - Runs the dpumesh compiler once for a list of targets (typically every host of a play batch, with
    C(run_once)), instead of once per host. Targets that read the same cluster state share one load of it,
    and targets with the same mesh settings share the compiler's per-state cache, so each further node costs a
    fraction of the first.
  - Writes each target's bundle to C(<build_dir>/<host>) in a private build directory (mode 0700) inside
    Ansible's local temporary directory. The directory is built under a temporary name and renamed once every
    target is written, so a returned O(build_dir) is complete; M(dpumesh_proxy_config) sends each host's bundle.
  - Any problem (in the cluster state, naming the object and field, in a target's settings, or a node missing
    from the state) fails the task, and with C(run_once) every host of the batch, before any SoC received
    anything; no build directory is left behind.
  - With O(remove), deletes a build directory an earlier call of the same run made, and nothing else.
  - Changes nothing on the managed hosts, so it reports C(changed=false) and runs in check mode too.
options:
  targets:
    description: One entry per host. Exactly one of O(targets) and O(remove).
    type: list
    elements: dict
    suboptions:
      host:
        description: Inventory host the bundle is for (names its directory in the build).
        type: str
        required: true
      node:
        description: Kubernetes node whose DPU the host is.
        type: str
        required: true
      state_dir:
        description: Directory of Kubernetes + Istio manifests. Exactly one of O(targets[].state_dir) and
          O(targets[].kubeconfig).
        type: path
      kubeconfig:
        description: Read the cluster state from the API server behind this kubeconfig.
        type: path
      mesh:
        description: Mesh settings for the compiler (trust_domain, outbound_traffic_policy, network_mode, ...).
        type: dict
      root:
        description: Versioned config directory on the host (the paths in the config point into it).
        type: path
        required: true
      cert_dir:
        description: Workload certificate directory on the host, referenced by the SDS files.
        type: path
  remove:
    description: A O(build_dir) returned earlier in this run, to delete.
    type: path
author: dpumesh maintainers
"""

EXAMPLES = r"""
- name: Compile every node of the batch once
  dpumesh_compile:
    targets:
      - host: node-1-dpu
        node: node-1
        state_dir: /srv/cluster-state
        mesh: {trust_domain: cluster.local, outbound_traffic_policy: REGISTRY_ONLY}
        root: /etc/dpumesh/proxy
      - host: node-2-dpu
        node: node-2
        state_dir: /srv/cluster-state
        mesh: {trust_domain: cluster.local, outbound_traffic_policy: REGISTRY_ONLY}
        root: /etc/dpumesh/proxy
  run_once: true
  register: build

- name: Remove the build directory
  dpumesh_compile:
    remove: "{{ build.build_dir }}"
  run_once: true
"""

RETURN = r"""
build_dir:
  description: The private build directory on the controller holding one bundle directory per host.
  returned: success, with O(targets)
  type: path
bundles:
  description: Per host, C(node), C(version) (content hash of the config), C(path) (its bundle directory) and
    C(stats) (counts of pods, classes, filter chains and clusters).
  returned: success, with O(targets)
  type: dict
state_loads:
  description: How many times a cluster state was loaded (once per distinct state source).
  returned: success, with O(targets)
  type: int
setting_groups:
  description: >-
    How many distinct (state, mesh settings) pairs were compiled; each pays the first node's cost. Hosts that
    differ only in O(root) or O(cert_dir) share one.
  returned: success, with O(targets)
  type: int
"""
