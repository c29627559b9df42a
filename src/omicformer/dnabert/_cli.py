"""``omicformer dnabert ...`` subcommands."""

from __future__ import annotations

import argparse


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register the ``dnabert`` command group."""
    parser = sub.add_parser("dnabert", help="dnabert commands")
    parser.add_subparsers(dest="dnabert_command", required=True)
