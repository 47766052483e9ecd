"""The one family of errors a user can fix; every script ends on one with a single line and exit 1.

Each module raises its own subclass (``DataError``, ``ModelError``, ...) with a message that says
what went wrong and what to do; ``finreason.console.run_main`` turns any of them into that line.
Anything else escaping a script is a bug and keeps its traceback.
"""

from __future__ import annotations


class FinReasonError(Exception):
    """A problem with the user's input, files or settings; ``str(error)`` says what to do."""
