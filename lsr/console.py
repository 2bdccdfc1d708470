"""What the command-line entry points share (``lsr`` and ``python -m lsr.eval``): an argument parser whose
errors are one line, and running a command with errors as one line on stderr and exit codes.

Exit codes: 0 done, 2 bad input (the error in one line, no traceback), 130 interrupted (Ctrl-C),
143 terminated (SIGTERM, handled like Ctrl-C so that a build removes its temporary folder).

Example:
    >>> from lsr.console import Parser, run_command
    >>> p = Parser(prog="lsr hello")
    >>> _ = p.add_argument("--name", default="world")
    >>> run_command("hello", lambda a: print(f"hello {a.name}") or 0, p.parse_args([]))
    hello world
    0
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Callable

from lsr.errors import LsrError

__all__ = ["Parser", "Terminated", "run_command"]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gets ONE line on stderr (and exit 2), not the usage block too.

    Example:
        >>> Parser(prog="lsr x").parse_args(["--nope"])   # doctest: +SKIP
        lsr x: error: unrecognized arguments: --nope (see lsr x --help)
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that a build cleans up its temporary folder."""


def _terminate(signum, frame):
    raise Terminated()


def run_command(name: str, handler: Callable[[Any], int], args: Any) -> int:
    """``handler(args)``, its errors turned into one line ``lsr NAME: error: ...`` and exit code 2.

    Library errors (:class:`~lsr.errors.LsrError`), bad values (ValueError), a path that exists
    (FileExistsError) and OS errors are bad input; Ctrl-C returns 130 and SIGTERM 143.
    """
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None  # clean up like Ctrl-C
    try:
        return handler(args)
    except (LsrError, ValueError, FileExistsError) as e:
        print(f"lsr {name}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"lsr {name}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        term = isinstance(e, Terminated)
        print(f"lsr {name}: {'terminated (SIGTERM)' if term else 'interrupted'}", file=sys.stderr)
        return 143 if term else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
