"""Kubernetes add-ons and mesh components: image table, manifest checks, RBAC review.

The Ansible roles under ``roles/`` render the objects; this package holds the logic
they share (through ``filter_plugins/dpumesh_k8s.py``) and that the tests call directly.
"""

from dpumesh.k8s.downloads import MirrorItem, format_mirror_list, images_report, load_downloads_table, mirror_list

__all__ = ["MirrorItem", "format_mirror_list", "images_report", "load_downloads_table", "mirror_list"]
