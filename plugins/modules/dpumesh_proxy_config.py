#!/usr/bin/python
"""Documentation of the dpumesh_proxy_config action (the work happens in plugins/action)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dpumesh_proxy_config
short_description: Compile and activate one DPU node's shared proxy and dataplane config
description:
  - Runs the dpumesh compiler on the controller for one Kubernetes node, copies the result to the DPU SoC as
    one archive and activates it with M(dpumesh_activate) (validate, then swap the C(current) symlink).
  - With C(--diff), shows a readable line-per-decision diff of routes, clusters and pods instead of raw JSON.
  - Supports check mode, in which it compiles and diffs and changes nothing.
options:
  node:
    description: Kubernetes node whose DPU the target host is.
    type: str
    required: true
  state_dir:
    description: Directory of Kubernetes + Istio manifests. Exactly one of O(state_dir) and O(kubeconfig).
    type: path
  kubeconfig:
    description: Read the cluster state from the API server behind this kubeconfig.
    type: path
  mesh:
    description: Mesh settings for the compiler (trust_domain, outbound_traffic_policy, network_mode, ...).
    type: dict
  root:
    description: Versioned config directory on the target.
    type: path
    required: true
  cert_dir:
    description: Workload certificate directory on the target, referenced by the SDS files.
    type: path
  keep:
    description: How many versions stay on the target.
    type: int
    default: 5
  validate_command:
    description: Command run on the staged version on the target; C({staged}) is replaced by its path.
    type: list
    elements: str
  health:
    description:
      - The health check after the swap (see M(dpumesh_activate)); a failing version is rolled back and the
        task fails for this node only, naming the reason.
      - Keys C(enabled) (bool), C(admin_url), C(netns), C(probe_command) (list) and C(timeout) (seconds).
    type: dict
author: dpumesh maintainers
"""

EXAMPLES = r"""
- name: Compile and activate node-1's config
  dpumesh_proxy_config:
    node: node-1
    state_dir: /srv/cluster-state
    mesh:
      trust_domain: cluster.local
      outbound_traffic_policy: REGISTRY_ONLY
    root: /etc/dpumesh/proxy
"""

RETURN = r"""
version:
  description: Version id (content hash) of the compiled config.
  returned: success
  type: str
current:
  description: Version active on the target after the task.
  returned: success
  type: str
stats:
  description: Counts of pods, classes, filter chains and clusters in the config.
  returned: success
  type: dict
"""
