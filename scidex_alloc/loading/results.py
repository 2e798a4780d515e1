"""What `alloc load` reports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    message: str


@dataclass
class LoadReport:
    table: str
    loaded: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems
