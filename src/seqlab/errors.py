"""The error type for problems a user can fix; the CLI prints these as one clear message, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(ValueError):
    """Bad input (config, file, checkpoint, command line): the message names the problem and what to do."""


class ConfigError(UserError):
    """A configuration problem, phrased for the person who wrote the config (raised where configs are read)."""


def warn(message: str) -> None:
    """A problem the user should know about that does not stop the command: one line on stderr."""
    print(f"seqlab: warning: {message}", file=sys.stderr, flush=True)


def report_user_errors(prefix: str, main: Callable[[], int | None]) -> int:
    """Runs `main`; a UserError becomes one line on stderr and exit status 2, Ctrl-C status 130."""
    try:
        return int(main() or 0)
    except UserError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
