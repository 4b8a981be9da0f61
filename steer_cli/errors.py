"""The one exception type the CLI turns into a short message instead of a traceback."""


class SteerError(Exception):
    """A problem the user can fix: says what is wrong and, in ``hint``, how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"
