"""``omicformer dnabert ...`` subcommands: ``embed-regions`` and ``predict``."""

from __future__ import annotations

import argparse

from .._cli_io import (
    add_overwrite,
    check_input,
    check_key_added,
    check_model,
    check_output,
    fail,
    make_output_folder,
    read_data,
    write_atomic,
)

_FASTA_SUFFIXES = tuple(
    f"{stem}{gz}" for gz in ("", ".gz", ".bgz") for stem in (".fa", ".fasta", ".fna", ".fas")
)
_TABLE_SUFFIXES = (".csv", ".tsv")
_DATA_SUFFIXES = (".h5ad", ".h5mu")
_OUTPUT_HELP = (
    "a new file (its folder is created if missing); an existing file, the input included, "
    "only with --overwrite"
)


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register the ``dnabert`` command group."""
    parser = sub.add_parser("dnabert", help="DNABERT commands for genomic regions and sequences")
    cmds = parser.add_subparsers(dest="dnabert_command", required=True)

    embed = cmds.add_parser(
        "embed-regions",
        help="Embed the regions (var_names like chr1:100-600) of an .h5ad/.h5mu into varm.",
    )
    embed.add_argument("input", help="input .h5ad (cells x regions) or .h5mu")
    embed.add_argument("output", help=f"output .h5ad / .h5mu; {_OUTPUT_HELP}")
    embed.add_argument("--fasta", required=True, help="genome FASTA (plain, bgzip or gzip)")
    embed.add_argument("--key-added", default="X_dnabert")
    embed.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    _common(embed, default_model="default")
    embed.set_defaults(func=_embed_regions, prog=embed.prog)

    pred = cmds.add_parser(
        "predict",
        help="Class probabilities of regions (.h5ad/.h5mu -> var columns) or sequences "
        "(FASTA -> .csv/.tsv).",
    )
    pred.add_argument("input", help="input .h5ad/.h5mu (needs --fasta) or FASTA of sequences")
    pred.add_argument(
        "output", help=f"output .h5ad/.h5mu, or .csv/.tsv for FASTA input; {_OUTPUT_HELP}"
    )
    pred.add_argument(
        "--fasta",
        default=None,
        help="genome FASTA for the regions of an .h5ad (not with FASTA input)",
    )
    pred.add_argument("--key-added", default="dnabert")
    _common(pred, default_model="default")
    pred.set_defaults(func=_predict, prog=pred.prog)


def _common(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument(
        "--model",
        default=default_model,
        help="'default' (shipped model), an official DNABERT folder or a DNABert.save() folder",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--region-key", default=None, help="var column with region strings")
    parser.add_argument("--mod", default="atac", help="modality of an .h5mu input")
    parser.add_argument("--reverse-complement", action="store_true", help="average both strands")
    parser.add_argument("--window-overlap", type=int, default=None, help="bases")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_overwrite(parser)


def _is_fasta(path: str) -> bool:
    return path.lower().endswith(_FASTA_SUFFIXES)


def _write(data, path: str) -> None:
    """Write ``data`` to ``path``, replacing a file there only once complete."""
    if path.lower().endswith(".h5mu"):
        write_atomic(path, data.write_h5mu)
    else:
        write_atomic(path, data.write_h5ad)


def _check_output(args: argparse.Namespace, allowed: tuple[str, ...]) -> None:
    check_output(args.prog, args.output, allowed, inputs=[args.input], overwrite=args.overwrite)
    if allowed == _DATA_SUFFIXES:  # the data are written back as they were read
        given = args.input.lower().endswith(".h5mu"), args.output.lower().endswith(".h5mu")
        if given[0] != given[1]:
            fmt = ".h5mu" if given[0] else ".h5ad"
            fail(
                args.prog,
                f"{args.output} is not a {fmt} file, but {args.input} is: the results are written "
                f"into the input's data, in its format. Name the output *{fmt}.",
            )


def _check_inputs(args: argparse.Namespace, suffixes: tuple[str, ...] = _DATA_SUFFIXES) -> None:
    """The input data, ``--fasta`` and ``--model``, then the output folder: before any reading."""
    check_input(args.prog, args.input, suffixes)
    if args.fasta is not None:
        check_input(args.prog, args.fasta, (), what="--fasta")
    check_model(args.prog, args.model)
    make_output_folder(args.prog, args.output)


def _embed_regions(args: argparse.Namespace) -> int:
    from . import tl
    from ._tools._common import modality

    _check_output(args, _DATA_SUFFIXES)
    check_key_added(args.prog, args.key_added, args.output)
    _check_inputs(args)
    data = read_data(args.prog, args.input)
    tl.embed_regions(
        data,
        fasta=args.fasta,
        model=args.model,
        key_added=args.key_added,
        region_key=args.region_key,
        mod=args.mod,
        pooling=args.pooling,
        reverse_complement=args.reverse_complement,
        window_overlap=args.window_overlap,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    _write(data, args.output)
    target = modality(data, args.mod)
    print(f"wrote {args.output}: varm[{args.key_added!r}] {target.varm[args.key_added].shape}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from . import tl

    kwargs = {
        "model": args.model,
        "key_added": args.key_added,
        "reverse_complement": args.reverse_complement,
        "window_overlap": args.window_overlap,
        "batch_size": args.batch_size,
        "device": args.device,
        "progress": not args.no_progress,
    }
    if _is_fasta(args.input):
        given = [o for o, v in (("--fasta", args.fasta), ("--region-key", args.region_key)) if v]
        if given:  # a FASTA input holds the sequences themselves: these would go unused
            fail(
                args.prog,
                f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} only for the "
                "regions of an .h5ad/.h5mu input; "
                f"{args.input} is a FASTA of sequences, predicted as they are. Drop "
                f"{' and '.join(given)}.",
            )
        _check_output(args, _TABLE_SUFFIXES)
        check_input(args.prog, args.input, ())
        check_model(args.prog, args.model)
        make_output_folder(args.prog, args.output)
        frame = tl.predict(args.input, **kwargs)
        sep = "\t" if args.output.lower().endswith(".tsv") else ","
        write_atomic(args.output, lambda path: frame.to_csv(path, sep=sep))
        print(f"wrote {args.output}: {len(frame)} sequences x {frame.shape[1]} columns")
        return 0
    if not args.input.lower().endswith(_DATA_SUFFIXES):  # named before the output's suffix
        fail(
            args.prog,
            f"input {args.input!r} must be sequences in a FASTA file (ending with one of "
            f"{_FASTA_SUFFIXES}) or regions in data ending with one of {_DATA_SUFFIXES}.",
        )
    _check_output(args, _DATA_SUFFIXES)
    check_key_added(args.prog, args.key_added, args.output)
    if args.fasta is None:
        fail(args.prog, "--fasta GENOME is required for .h5ad input.")
    _check_inputs(args, _DATA_SUFFIXES)
    data = read_data(args.prog, args.input)
    tl.predict(data, fasta=args.fasta, region_key=args.region_key, mod=args.mod, **kwargs)
    _write(data, args.output)
    print(f"wrote {args.output}: var['{args.key_added}_prob_*'] and '{args.key_added}_prediction'")
    return 0
