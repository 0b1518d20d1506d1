"""What a failed ``qrun`` tells the user: the error that ended it, in one line; the traceback stays in its log.

Light on imports, so the command line can catch :class:`QrunError` without loading mlflow or torch.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["QrunError", "final_error"]

# The last line of a Python traceback: ``package.module.SomeError: message``.
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<name>[A-Za-z_]\w*(?:Error|Exception)): (?P<message>.+)$")


class QrunError(RuntimeError):
    """A ``qrun`` subprocess failed."""


def final_error(log_path: str | Path) -> str:
    """The exception that ended a failed run (the log's last ``SomeError: message`` line), or the log's tail."""
    lines = Path(log_path).read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if found := EXCEPTION_LINE.match(line):
            return f"{found['name']}: {found['message'].strip()}"
    return "last lines of the log:\n" + "\n".join(lines[-25:])
