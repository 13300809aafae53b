"""The ``statesession`` command's entry point: parse the command line, run the command,
return its exit status.

The commands that write to standard output stop quietly when its reader goes away
(``statesession sessions | head``), with :data:`EXIT_BROKEN_PIPE`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .diagram import _run_diagram
from .parser import _parser
from .replay import _run_replay
from .serve import _run_serve
from .sessions import _run_sessions

__all__ = ["main"]

#: The exit status when standard output's reader went away: what a shell reports for a
#: program that a closed pipe stopped (128 + SIGPIPE, 13), as ``seq 100000 | head -1``
#: gives its first command under ``set -o pipefail``. Not 0: the output did not all
#: arrive.
EXIT_BROKEN_PIPE = 141


def _discard_stdout() -> None:
    """Point standard output at the null device: its reader is gone, and the interpreter's
    last flush of what is still buffered must not fail (and print a traceback) again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    run = {"sessions": _run_sessions, "replay": _run_replay, "diagram": _run_diagram}
    try:
        status = run[args.command](args)
        sys.stdout.flush()
    except BrokenPipeError:  # statesession sessions | head
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return status
