"""Command line interface: ``omicformer scgpt ...``, ``omicformer dnabert ...``, ``omicformer demo``."""

from __future__ import annotations

import argparse
import sys


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

    demo = sub.add_parser("demo", help="Run the quickstart on bundled data and write UMAP PNGs.")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.add_argument("--device", default="auto")
    demo.set_defaults(func=_run_demo)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    run_demo(args.out, device=args.device)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``omicformer`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
