"""``omicformer scgpt ...`` subcommands."""

from __future__ import annotations

import argparse

from .._cli_io import add_overwrite


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register the ``scgpt`` command group."""
    parser = sub.add_parser("scgpt", help="scGPT single-cell commands")
    cmds = parser.add_subparsers(dest="scgpt_command", required=True)

    embed = cmds.add_parser(
        "embed", help="Embed cells of an .h5ad file; writes obsm['X_scgpt'] to a new .h5ad."
    )
    embed.add_argument("input", help="input .h5ad (cells x genes; counts in X or --layer)")
    embed.add_argument(
        "output",
        help="output .h5ad: a new file (its folder is created if missing); an existing file, "
        "the input included, only with --overwrite",
    )
    embed.add_argument(
        "--model", default="default", help="'default', official folder or saved model"
    )
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument(
        "--max-len", type=int, default=None,
        help="tokens per cell; default: the model's (1200 for the default model)",
    )  # fmt: skip
    embed.add_argument("--layer", default=None)
    embed.add_argument("--gene-key", default=None, help="var column with gene symbols")
    embed.add_argument(
        "--batch-key", default=None, help="obs column with batches (models trained with DSBN)"
    )
    embed.add_argument("--key-added", default="X_scgpt")
    embed.add_argument("--device", default="auto")
    embed.add_argument("--no-progress", action="store_true", help="hide progress bars")
    embed.add_argument(
        "--backed", action="store_true", help="read the input backed (out-of-core), in chunks"
    )
    add_overwrite(embed)
    embed.set_defaults(func=_embed, prog=embed.prog)


def _embed(args: argparse.Namespace) -> int:
    from .._cli_io import (
        check_input,
        check_key_added,
        check_model,
        check_output,
        make_output_folder,
        read_data,
        write_atomic,
    )
    from . import tl

    check_output(args.prog, args.output, (".h5ad",), inputs=[args.input], overwrite=args.overwrite)
    check_key_added(args.prog, args.key_added, args.output)
    check_input(args.prog, args.input, (".h5ad",))
    check_model(args.prog, args.model)
    make_output_folder(args.prog, args.output)
    adata = read_data(args.prog, args.input, backed=args.backed)
    tl.embed(
        adata,
        model=args.model,
        layer=args.layer,
        gene_key=args.gene_key,
        batch_key=args.batch_key,
        key_added=args.key_added,
        batch_size=args.batch_size,
        max_len=args.max_len,
        device=args.device,
        progress=not args.no_progress,
    )
    shape = adata.obsm[args.key_added].shape
    write_atomic(args.output, adata.write_h5ad)
    if adata.isbacked:
        adata.file.close()
    print(f"wrote {args.output}: obsm[{args.key_added!r}] {shape}")
    return 0
