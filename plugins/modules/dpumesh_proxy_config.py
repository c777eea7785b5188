#!/usr/bin/python
"""Documentation of the dpumesh_proxy_config action (the work happens in plugins/action)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dpumesh_proxy_config
short_description: Send one DPU node's compiled shared proxy and dataplane config to its SoC and activate it
description:
  - Takes the node's bundle from a M(dpumesh_compile) build on the controller, copies it to the DPU SoC as
    one archive and activates it with M(dpumesh_activate) (validate, then swap the C(current) symlink).
  - Sends nothing when the SoC already runs the bundle's version (one remote call).
  - With C(--diff), shows a readable line-per-decision diff of routes, clusters and pods instead of raw JSON.
  - Supports check mode, in which it diffs and changes nothing.
options:
  bundle:
    description: The node's bundle directory on the controller (C(bundles[host].path) of M(dpumesh_compile)).
    type: path
    required: true
  root:
    description: Versioned config directory on the target; the one the bundle was compiled for.
    type: path
    required: true
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
- name: Compile every node of the batch once, on the controller
  dpumesh_compile:
    targets:
      - host: "{{ inventory_hostname }}"
        node: node-1
        state_dir: /srv/cluster-state
        mesh: {trust_domain: cluster.local, outbound_traffic_policy: REGISTRY_ONLY}
        root: /etc/dpumesh/proxy
  run_once: true
  register: build

- name: Activate node-1's config on its SoC
  dpumesh_proxy_config:
    bundle: "{{ build.bundles[inventory_hostname].path }}"
    root: /etc/dpumesh/proxy
"""

RETURN = r"""
node:
  description: Kubernetes node the bundle was compiled for.
  returned: success
  type: str
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
