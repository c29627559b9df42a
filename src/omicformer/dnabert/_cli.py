"""``omicformer dnabert ...`` subcommands: ``embed-regions`` and ``predict``."""

from __future__ import annotations

import argparse
from pathlib import Path

_FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz", ".fa.bgz")
_TABLE_SUFFIXES = (".csv", ".tsv")


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register the ``dnabert`` command group."""
    parser = sub.add_parser("dnabert", help="DNABERT commands for genomic regions and sequences")
    cmds = parser.add_subparsers(dest="dnabert_command", required=True)

    embed = cmds.add_parser(
        "embed-regions",
        help="Embed the regions (var_names like chr1:100-600) of an .h5ad/.h5mu into varm.",
    )
    embed.add_argument("input", help="input .h5ad (cells x regions) or .h5mu")
    embed.add_argument("output", help="output .h5ad / .h5mu")
    embed.add_argument("--fasta", required=True, help="genome FASTA (plain, bgzip or gzip)")
    embed.add_argument("--key-added", default="X_dnabert")
    embed.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    _common(embed, default_model="default")
    embed.set_defaults(func=_embed_regions)

    pred = cmds.add_parser(
        "predict",
        help="Class probabilities of regions (.h5ad/.h5mu -> var columns) or sequences "
        "(FASTA -> .csv/.tsv).",
    )
    pred.add_argument("input", help="input .h5ad/.h5mu (needs --fasta) or FASTA of sequences")
    pred.add_argument("output", help="output .h5ad/.h5mu, or .csv/.tsv for FASTA input")
    pred.add_argument("--fasta", default=None, help="genome FASTA for the regions of an .h5ad")
    pred.add_argument("--key-added", default="dnabert")
    _common(pred, default_model="default")
    pred.set_defaults(func=_predict)


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


def _is_fasta(path: str) -> bool:
    return path.lower().endswith(_FASTA_SUFFIXES)


def _read(path: str):
    if not Path(path).is_file():
        msg = f"input file {path!r} does not exist."
        raise SystemExit(f"omicformer dnabert: error: {msg}")
    if path.endswith(".h5mu"):
        import mudata

        return mudata.read_h5mu(path)
    if path.endswith(".h5ad"):
        import anndata as ad

        return ad.read_h5ad(path)
    msg = f"cannot read {path!r}: expected .h5ad or .h5mu."
    raise SystemExit(f"omicformer dnabert: error: {msg}")


def _write(data, path: str) -> None:
    if path.endswith(".h5mu"):
        data.write_h5mu(path)
    else:
        data.write_h5ad(path)


def _check_output(path: str, allowed: tuple[str, ...]) -> None:
    if not path.lower().endswith(allowed):
        msg = f"output {path!r} must end with one of {allowed}."
        raise SystemExit(f"omicformer dnabert: error: {msg}")


def _embed_regions(args: argparse.Namespace) -> int:
    from . import tl
    from ._tools._common import modality

    _check_output(args.output, (".h5ad", ".h5mu"))
    data = _read(args.input)
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
        _check_output(args.output, _TABLE_SUFFIXES)
        if not Path(args.input).is_file():
            raise SystemExit(
                f"omicformer dnabert: error: input file {args.input!r} does not exist."
            )
        frame = tl.predict(args.input, **kwargs)
        frame.to_csv(args.output, sep="\t" if args.output.lower().endswith(".tsv") else ",")
        print(f"wrote {args.output}: {len(frame)} sequences x {frame.shape[1]} columns")
        return 0
    _check_output(args.output, (".h5ad", ".h5mu"))
    if args.fasta is None:
        raise SystemExit("omicformer dnabert: error: --fasta GENOME is required for .h5ad input.")
    data = _read(args.input)
    tl.predict(data, fasta=args.fasta, region_key=args.region_key, mod=args.mod, **kwargs)
    _write(data, args.output)
    print(f"wrote {args.output}: var['{args.key_added}_prob_*'] and '{args.key_added}_prediction'")
    return 0
