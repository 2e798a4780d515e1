"""Exceptions that carry the exit code the CLI reports for them.

A usage error names the parameters it concerns as placeholders (`{limit} must be at
least 1`), so that each interface words them its own way: the library by their Python
names, the CLI as its flags (`--limit`), the API as its query parameters.
"""

from __future__ import annotations

from typing import Callable

OK = 0
DATABASE = 1
USAGE = 2
INSUFFICIENT = 3
NOT_FOUND = 4
CONFLICT = 5
AUDIT_FAILED = 6


class AllocError(Exception):
    """A failure a user can act on; its message is one line."""

    exit_code = DATABASE


class DatabaseError(AllocError):
    exit_code = DATABASE


class UsageError(AllocError):
    exit_code = USAGE

    def __init__(self, message: str, *params: str):
        self.template, self.params = message, params
        super().__init__(self.worded(lambda param: param))

    def worded(self, name_of: Callable[[str], str]) -> str:
        """The message with each `{param}` placeholder replaced by `name_of(param)`."""
        text = self.template
        for param in self.params:
            text = text.replace("{" + param + "}", name_of(param))
        return text


class InsufficientBudget(AllocError):
    exit_code = INSUFFICIENT


class NotFound(AllocError):
    """What was named does not exist (the API answers 404)."""

    exit_code = NOT_FOUND


class UnknownArtifact(NotFound):
    pass


class UnknownId(NotFound):
    """No spend or claim has this id."""


class IdempotencyConflict(AllocError):
    exit_code = CONFLICT
