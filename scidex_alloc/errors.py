"""Exceptions that carry the exit code the CLI reports for them."""

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


class InsufficientBudget(AllocError):
    exit_code = INSUFFICIENT


class UnknownArtifact(AllocError):
    exit_code = NOT_FOUND


class IdempotencyConflict(AllocError):
    exit_code = CONFLICT
