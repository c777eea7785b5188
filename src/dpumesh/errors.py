"""User-facing errors and warnings.

Every problem with user input is an ``InputProblem`` that names the object
(kind/namespace/name) and the field. The compiler collects all of them before
writing anything, so one run reports every mistake at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class InputProblem:
    kind: str
    namespace: str
    name: str
    field: str
    message: str

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    def __str__(self) -> str:
        return f"{self.ref}: {self.field}: {self.message}" if self.field else f"{self.ref}: {self.message}"


class DpumeshError(Exception):
    """An error the user can fix; the CLI prints it without a traceback."""


class InputError(DpumeshError):
    """One or more problems in the cluster state or the options given."""

    def __init__(self, problems: list[InputProblem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Diagnostics:
    """Collects errors and warnings while reading and compiling."""

    errors: list[InputProblem] = field(default_factory=list)
    warnings: list[InputProblem] = field(default_factory=list)

    def error(self, kind: str, namespace: str, name: str, field_: str, message: str) -> None:
        self.errors.append(InputProblem(kind, namespace, name, field_, message))

    def warn(self, kind: str, namespace: str, name: str, field_: str, message: str) -> None:
        self.warnings.append(InputProblem(kind, namespace, name, field_, message))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise InputError(self.errors)
