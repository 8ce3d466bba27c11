"""The one exception type users see as a clean one-line error."""


class CnnModeError(Exception):
    """A problem with the user's input or environment, shown without a traceback.

    `exit_code` is 2 for usage errors (bad names, keys, values) and 1 for runtime failures.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CnnModeError):
    """Bad command-line input: unknown names, keys or values (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


class RunError(CnnModeError):
    """A failure while running (diverged loss, out of memory, unreadable data) (exit code 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)
