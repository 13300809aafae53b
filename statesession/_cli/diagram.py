"""``statesession diagram``: write the lifecycle chart, as Mermaid or DOT text or as an
SVG or PNG drawn by Graphviz, to standard output or a file."""

from __future__ import annotations

import argparse
import sys

from .._lifecycle.diagram import lifecycle_diagram, lifecycle_image

__all__ = ["_run_diagram"]


def _run_diagram(args: argparse.Namespace) -> int:
    data: str | bytes
    if args.format in ("mermaid", "dot"):
        data = lifecycle_diagram(args.format)
    elif args.format == "png" and args.output is None and sys.stdout.isatty():
        print("statesession: png is binary; write it with -o FILE", file=sys.stderr)
        return 2
    else:
        try:
            data = lifecycle_image(args.format)
        except OSError as exc:
            print(f"statesession: cannot render {args.format}: {exc}", file=sys.stderr)
            return 1
        if args.format == "svg":
            data = data.decode()
    if args.output is None:
        if isinstance(data, str):
            sys.stdout.write(data)
        else:
            sys.stdout.buffer.write(data)
        return 0
    try:
        if isinstance(data, str):
            args.output.write_text(data)
        else:
            args.output.write_bytes(data)
    except OSError as exc:
        print(f"statesession: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    return 0
