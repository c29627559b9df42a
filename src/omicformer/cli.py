"""Command line interface: ``omicformer scgpt ...``, ``omicformer dnabert ...``, ``omicformer demo``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser; each model package registers its own subcommands."""
    from .dnabert._cli import add_subparser as add_dnabert
    from .scgpt._cli import add_subparser as add_scgpt

    parser = argparse.ArgumentParser(
        prog="omicformer", description="scGPT and DNABERT for AnnData pipelines."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_scgpt(sub)
    add_dnabert(sub)

    demo = sub.add_parser("demo", help="Run the quickstart on bundled data and write a UMAP PNG.")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.add_argument("--device", default="auto")
    demo.set_defaults(func=_run_demo, prog=demo.prog)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from ._cli_io import fail
    from ._demo import run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        fail(args.prog, f"--out {args.out!r} is a file; pass a folder (created if missing).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(args.prog, f"cannot create the folder --out {args.out!r}: {err.strerror}.")
    if not os.access(out, os.W_OK):
        fail(args.prog, f"cannot write to --out {args.out!r}: the folder is not writable.")
    run_demo(out, device=args.device)
    return 0


#: Exit status after Ctrl-C (128 + SIGINT, as shells report a command interrupted).
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``omicformer`` command.

    An error the library raises on a bad argument or file (a ``ValueError``, ``KeyError``,
    ``FileNotFoundError``... of its own checks) ends the command with one line
    ``omicformer <cmd>: error: <message>`` and exit status 1; other errors keep their traceback.
    Ctrl-C ends it with ``omicformer <cmd>: interrupted`` and exit status 130.
    """
    from ._cli_io import USER_ERRORS, fail, message_of, raised_by_omicformer

    parser = build_parser()
    args = parser.parse_args(argv)
    prog = getattr(args, "prog", parser.prog)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if not raised_by_omicformer(err):
            raise
        fail(prog, message_of(err))
    except KeyboardInterrupt:  # Ctrl-C: no traceback; outputs are written whole or not at all
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
