"""Cluster state: read, expand and validate Kubernetes + Istio objects."""

from __future__ import annotations

from pathlib import Path

from dpumesh.gcpause import collector_paused
from dpumesh.state.build import build_state
from dpumesh.state.load import load_live, load_manifest_dir
from dpumesh.state.model import ClusterState


def load_state(path: str | Path, service_cidr: str = "10.96.0.0/16") -> ClusterState:
    """The validated state of a manifest directory."""
    with collector_paused():
        return build_state(load_manifest_dir(path), service_cidr)


def load_live_state(kubeconfig: str | Path, service_cidr: str = "10.96.0.0/16") -> ClusterState:
    """The validated state of the cluster behind a kubeconfig."""
    objects = load_live(kubeconfig)
    with collector_paused():
        return build_state(objects, service_cidr)


__all__ = ["ClusterState", "build_state", "load_live_state", "load_state"]
