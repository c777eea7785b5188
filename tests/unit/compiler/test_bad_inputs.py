"""Every malformed input is refused with a message naming the object and field, and nothing is written.

Each file in bad_inputs/ is a complete state (multi-document YAML) with a
`# expect: <text>` line and optionally `# args: <extra CLI args>`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from dpumesh.cli import main

CASES = sorted((Path(__file__).parent / "bad_inputs").glob("*.yaml"))


def _header(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.startswith(f"# {key}:"):
            return line.split(":", 1)[1].strip()
    return ""


def test_corpus_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_input_is_refused(case: Path, tmp_path: Path, capsys):
    text = case.read_text()
    expected = _header(text, "expect")
    assert expected, f"{case.name} has no '# expect:' line"
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.yaml").write_text(text)
    out = tmp_path / "out"
    args = ["compile", "--state", str(state), "--node", "node-1", "--out", str(out), "--no-validate"]
    code = main(args + shlex.split(_header(text, "args")))
    err = capsys.readouterr().err
    assert code != 0
    assert expected in err, err
    assert "Traceback" not in err
    assert not out.exists(), "nothing may be written for bad input"
