"""Ansible filters for the downloads table and the renamed-variables table (roles downloads, k8s_common, dpu_soc).

Adapters over ``dpumesh.k8s``.
"""

from __future__ import annotations

from dpumesh.k8s import downloads, renamed
from dpumesh.k8s.manifests import plain


def download_problems(table, overrides=None, mirror="", require_digests=False):
    return downloads.table_problems(plain(table), plain(overrides or {}), mirror or "", _bool(require_digests))


def resolve_downloads(table, overrides=None, mirror=""):
    return downloads.resolve(plain(table), mirror or "", plain(overrides or {}))


def service_images(table, overrides, services, entries, mirror="", need_archive=False, require_digests=False):
    return downloads.service_images(
        plain(table),
        plain(overrides or {}),
        list(services),
        plain(entries or {}),
        mirror or "",
        _bool(need_archive),
        _bool(require_digests),
    )


def archive_digest_problems(entries, archive_dir):
    """Runs on the controller, where the archives are."""
    return downloads.archive_digest_problems(plain(entries), str(archive_dir))


def renamed_variable_problems(names):
    """``names``: the variables set for the host, query('ansible.builtin.varnames', '.+')."""
    return renamed.renamed_variable_problems(names or [])


def _bool(value) -> bool:
    """An inventory flag that may arrive as a string ("true", "false")."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return bool(value)


class FilterModule:
    def filters(self):
        return {
            "dpumesh_download_problems": download_problems,
            "dpumesh_resolve_downloads": resolve_downloads,
            "dpumesh_service_images": service_images,
            "dpumesh_archive_digest_problems": archive_digest_problems,
            "dpumesh_renamed_variable_problems": renamed_variable_problems,
        }
