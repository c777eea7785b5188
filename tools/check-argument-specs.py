#!/usr/bin/env python3
"""Check that every role's meta/argument_specs.yml matches its defaults/main.yml.

Every public variable in defaults must be documented in the `main` entry point
with a type and description, and every documented option that is not required
must have a default whose value equals the one in defaults/. Internal variables
(`_<role>_*`) are exempt. Exits non-zero naming each mismatch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def check_role(role: Path) -> list[str]:
    problems: list[str] = []
    name = role.name
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    if not specs_file.is_file():
        return [f"{name}: meta/argument_specs.yml is missing"]
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.is_file() else {}
    defaults = defaults or {}
    specs = (yaml.safe_load(specs_file.read_text()) or {}).get("argument_specs", {})
    options = (specs.get("main") or {}).get("options") or {}
    if "main" not in specs:
        problems.append(f"{name}: argument_specs has no 'main' entry point")
    for var, value in defaults.items():
        if var.startswith("_"):
            continue
        if not var.startswith(f"{name}_"):
            problems.append(f"{name}: default '{var}' is not prefixed '{name}_'")
        spec = options.get(var)
        if spec is None:
            problems.append(f"{name}: default '{var}' is not in meta/argument_specs.yml")
            continue
        if "default" not in spec:
            problems.append(f"{name}: option '{var}' has no default in argument_specs (defaults: {value!r})")
        elif spec["default"] != value:
            problems.append(f"{name}: option '{var}' default {spec['default']!r} != defaults {value!r}")
    for var, spec in options.items():
        if not spec.get("description"):
            problems.append(f"{name}: option '{var}' has no description")
        if "type" not in spec:
            problems.append(f"{name}: option '{var}' has no type")
        if var not in defaults and not spec.get("required"):
            problems.append(f"{name}: option '{var}' is neither required nor in defaults/main.yml")
    return problems


def main() -> int:
    roles = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir()) if (ROOT / "roles").is_dir() else []
    problems = [p for role in roles for p in check_role(role)]
    for p in problems:
        print(p, file=sys.stderr)
    print(f"argument specs: {len(roles)} roles checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
