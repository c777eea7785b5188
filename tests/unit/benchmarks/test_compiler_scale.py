"""The compiler benchmark: the first compile taken in fresh processes, its median the figure."""

from __future__ import annotations

import json

import pytest

from benchmarks import compiler_scale

TINY = "--services 40 --pods 60 --nodes 3 --virtual-services 8 --destination-rules 8 --namespaces 2 --seed 3"


def test_the_first_compile_is_the_median_of_fresh_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(compiler_scale, "envoy_check", lambda files, config_dir: {"accepted": None, "seconds": 0})
    out = tmp_path / "scale.json"
    argv = [*TINY.split(), "--fractions", "1", "--cold-rounds", "3", "--repeat", "2", "--one-node-only"]
    assert compiler_scale.main([*argv, "--out", str(out), "--plot", str(tmp_path / "scale.svg")]) == 0
    [run] = json.loads(out.read_text())["runs"]
    first = run["one_node"]
    assert run["complete"] and len(first["cold_rounds"]) == 3
    assert first["cold_rounds"][0] == round(first["first_seconds"], 4), "the main run's first compile is a round"
    assert abs(first["cold_median_seconds"] - sorted(first["cold_rounds"])[1]) < 1e-3
    assert first["helper_vhosts"] == 0, "too few virtual hosts to fork a helper"
    assert len(first["tries"]) == 2 and first["best_seconds"] <= first["tries"][0]


def test_cold_rounds_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        compiler_scale.main(["--cold-rounds", "0", "--out", "/nonexistent/never"])
    assert "--cold-rounds must be at least 1" in capsys.readouterr().err
