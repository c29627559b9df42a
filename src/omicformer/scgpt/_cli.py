"""``omicformer scgpt ...`` subcommands."""

from __future__ import annotations

import argparse


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register the ``scgpt`` command group."""
    parser = sub.add_parser("scgpt", help="scgpt commands")
    parser.add_subparsers(dest="scgpt_command", required=True)
