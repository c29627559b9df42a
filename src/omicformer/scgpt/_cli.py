"""``omicformer scgpt ...`` subcommands: ``embed``, ``annotate`` and ``integrate``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .._cli_io import add_overwrite, fail, results_to_stdout

_OUTPUT_HELP = (
    "output .h5ad: a new file (its folder is created if missing); an existing file, the input "
    "included, only with --overwrite"
)


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register the ``scgpt`` command group."""
    parser = sub.add_parser("scgpt", help="scGPT single-cell commands")
    cmds = parser.add_subparsers(dest="scgpt_command", required=True)

    embed = cmds.add_parser(
        "embed", help="Embed cells of an .h5ad file; writes obsm['X_scgpt'] to a new .h5ad."
    )
    embed.add_argument("input", help="input .h5ad (cells x genes; counts in X or --layer)")
    embed.add_argument("output", help=_OUTPUT_HELP)
    embed.add_argument(
        "--model", default="default", help="'default', official folder or saved model"
    )
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument(
        "--max-len", type=int, default=None,
        help="tokens per cell; default: the model's (1200 for the default model)",
    )  # fmt: skip
    _genes(embed)
    embed.add_argument(
        "--batch-key", default=None, help="obs column with batches (models trained with DSBN)"
    )
    embed.add_argument("--key-added", default="X_scgpt")
    _run_options(embed)
    embed.set_defaults(func=_embed, prog=embed.prog)

    annotate = cmds.add_parser(
        "annotate",
        help="Label the cells of an .h5ad from a labelled reference (fine-tuned scGPT or kNN); "
        "writes obs['scgpt_<label-key>'] and its confidence to a new .h5ad.",
    )
    annotate.add_argument("input", help="input .h5ad: the cells to label (the query)")
    annotate.add_argument("output", help=_OUTPUT_HELP)
    annotate.add_argument(
        "--label-key", required=True, help="obs column of the reference with the labels"
    )
    annotate.add_argument(
        "--reference",
        default=None,
        help="labelled reference .h5ad; without it, the input's cells with a label are the "
        "reference and its cells without one are labelled",
    )
    annotate.add_argument(
        "--model",
        default="default",
        help="'default', official folder, saved model, or a classifier saved by --save-model "
        "(used without retraining when trained on the reference's labels)",
    )
    annotate.add_argument(
        "--method", choices=["finetune", "knn"], default="finetune",
        help="finetune (default): fine-tune on the reference; knn: the nearest reference cells "
        "in the zero-shot embedding, no training",
    )  # fmt: skip
    annotate.add_argument(
        "--key-added", default=None, help="obs column of the labels; default scgpt_<label-key>"
    )
    _genes(annotate)
    annotate.add_argument(
        "--min-confidence", type=float, default=0.0,
        help="cells whose confidence is below this (in [0, 1]) are labelled 'Unknown'",
    )  # fmt: skip
    annotate.add_argument(
        "--max-epochs", type=int, default=None,
        help="fine-tuning epochs; default: scaled with the reference's size",
    )  # fmt: skip
    annotate.add_argument(
        "--n-models", type=int, default=1,
        help="classifiers fine-tuned with different seeds and averaged (finetune)",
    )  # fmt: skip
    annotate.add_argument("--batch-size", type=int, default=32)
    _run_options(
        annotate,
        save_help="to label further data with --model FOLDER without retraining",
        reference=True,
    )
    annotate.set_defaults(func=_annotate, prog=annotate.prog)

    integrate = cmds.add_parser(
        "integrate",
        help="Integrate the batches of an .h5ad with fine-tuned scGPT; writes "
        "obsm['X_scgpt_integrated'] to a new .h5ad.",
    )
    integrate.add_argument("input", help="input .h5ad (cells x genes; counts in X or --layer)")
    integrate.add_argument("output", help=_OUTPUT_HELP)
    integrate.add_argument("--batch-key", required=True, help="obs column with the batches")
    integrate.add_argument(
        "--labels-key", default=None,
        help="obs column with cell labels, where some cells have them, to keep them apart",
    )  # fmt: skip
    integrate.add_argument(
        "--model", default="default", help="'default', official folder or saved model"
    )
    integrate.add_argument("--key-added", default="X_scgpt_integrated")
    _genes(integrate)
    integrate.add_argument(
        "--max-epochs", type=int, default=None,
        help="fine-tuning epochs; default: scaled with the number of cells",
    )  # fmt: skip
    integrate.add_argument(
        "--dsbn", action="store_true", help="domain-specific batch norm (one per batch)"
    )
    integrate.add_argument("--batch-size", type=int, default=64)
    _run_options(
        integrate,
        save_help="to embed further cells of these batches with 'omicformer scgpt embed --model "
        "FOLDER --batch-key ...' (without the correction after fine-tuning) or to fine-tune "
        "from it",
    )
    integrate.set_defaults(func=_integrate, prog=integrate.prog)


def _genes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", default=None, help="layer with the counts; default X")
    parser.add_argument("--gene-key", default=None, help="var column with gene symbols")


def _run_options(
    parser: argparse.ArgumentParser, *, save_help: str | None = None, reference: bool = False
) -> None:
    parser.add_argument("--device", default="auto")
    if save_help is not None:
        parser.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
        parser.add_argument(
            "--save-model",
            default=None,
            metavar="FOLDER",
            help=f"also save the fine-tuned model to this folder, {save_help} (an existing "
            "saved model there is replaced only with --overwrite)",
        )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--backed",
        action="store_true",
        help="read the input" + (" and the reference" if reference else "")
        + " backed (out-of-core), in chunks",
    )  # fmt: skip
    add_overwrite(parser)


def _prepare(args: argparse.Namespace, key_added: str, inputs: list[str]) -> None:
    """The checks every command makes before reading anything, then the output folder."""
    from .._cli_io import check_input, check_key_added, check_model, check_output

    check_output(args.prog, args.output, (".h5ad",), inputs=inputs, overwrite=args.overwrite)
    check_key_added(args.prog, key_added, args.output)
    check_input(args.prog, args.input, (".h5ad",))
    if getattr(args, "reference", None) is not None:
        check_input(args.prog, args.reference, (".h5ad",), what="--reference")
    check_model(args.prog, args.model)
    if getattr(args, "save_model", None) is not None:
        _check_save_folder(args)


def _check_save_folder(args: argparse.Namespace) -> None:
    """``--save-model`` can take the model, checked now rather than after the training.

    A new or existing folder; one that holds a saved model only with ``--overwrite``.
    """
    from .._core._io import model_entries

    folder = Path(args.save_model).expanduser()
    if getattr(args, "method", "finetune") != "finetune":
        fail(args.prog, "--save-model needs --method finetune: --method knn trains no model.")
    if folder.exists() and not folder.is_dir():
        fail(args.prog, f"--save-model {args.save_model!r} is a file; pass a folder.")
    here = folder.absolute()
    above = next(p for p in (here, *here.parents) if p.exists())  # the root always exists
    if not above.is_dir():
        fail(args.prog, f"cannot save the model to {args.save_model!r}: {str(above)!r} is a file.")
    if not os.access(above, os.W_OK):
        fail(
            args.prog,
            f"cannot save the model to {args.save_model!r}: the folder {str(above)!r} is not "
            "writable.",
        )
    output = Path(args.output).expanduser().resolve()
    if output in (folder.resolve(), *folder.resolve().parents):
        fail(
            args.prog,
            f"--save-model {args.save_model!r} is the output file {args.output!r} (or inside "
            "it); the model is saved as a folder: choose another path.",
        )
    # saving the model replaces its folder's adata.h5ad and an ensemble's member folders
    # (member_<i>) whole, so no file the command reads or writes may be there
    for role, name in (("output", args.output), ("input", args.input),
                       ("--reference", getattr(args, "reference", None))):  # fmt: skip
        path = None if name is None else Path(name).expanduser().resolve()
        if path is None or folder.resolve() not in path.parents:
            continue
        first = path.relative_to(folder.resolve()).parts[0]
        if first == "adata.h5ad" or first.startswith("member_"):
            where = "the adata.h5ad" if first == "adata.h5ad" else f"in the folder {first!r}"
            fail(
                args.prog,
                f"the {role} {name!r} is {where} of --save-model {args.save_model!r}, which "
                "saving the model replaces; move the file or save the model to another folder.",
            )
    if model_entries(folder) and not args.overwrite:
        fail(
            args.prog,
            f"--save-model {args.save_model!r} already holds a saved model; pass --overwrite "
            "to replace it, or choose a new folder.",
        )
    if args.model != "default" and folder.resolve() == Path(args.model).expanduser().resolve():
        fail(
            args.prog,
            f"--save-model {args.save_model!r} is the --model folder being read; choose a new "
            "folder.",
        )


def _write(args: argparse.Namespace, adata: Any, model: Any = None) -> None:
    """Write the output (complete or not at all), then the model, then close backed files."""
    from .._cli_io import write_atomic

    write_atomic(args.output, adata.write_h5ad)
    if model is not None and args.save_model is not None:
        model.save(Path(args.save_model).expanduser(), overwrite=args.overwrite)
    if adata.isbacked:
        adata.file.close()


def _embed(args: argparse.Namespace) -> int:
    from .._cli_io import make_output_folder, read_data
    from . import tl

    _prepare(args, args.key_added, [args.input])
    make_output_folder(args.prog, args.output)
    adata = read_data(args.prog, args.input, backed=args.backed)
    with results_to_stdout():  # progress bars and messages on stderr
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
    _write(args, adata)
    print(f"wrote {args.output}: obsm[{args.key_added!r}] {shape}")
    return 0


def _annotate(args: argparse.Namespace) -> int:
    from .._cli_io import make_output_folder, read_data
    from . import tl

    key = args.key_added if args.key_added is not None else f"scgpt_{args.label_key}"
    _prepare(args, key, [p for p in (args.input, args.reference) if p is not None])
    make_output_folder(args.prog, args.output)
    adata = read_data(args.prog, args.input, backed=args.backed)
    reference = None
    if args.reference is not None:
        reference = read_data(args.prog, args.reference, backed=args.backed)
    with results_to_stdout():  # progress bars and messages on stderr
        model = tl.annotate(
            adata,
            reference,
            label_key=args.label_key,
            model=args.model,
            method=args.method,
            key_added=key,
            layer=args.layer,
            gene_key=args.gene_key,
            min_confidence=args.min_confidence,
            max_epochs=args.max_epochs,
            n_models=args.n_models,
            batch_size=args.batch_size,
            device=args.device,
            random_state=args.random_state,
            progress=not args.no_progress,
            return_model=True,
        )
    labels = adata.obs[key]
    n_unknown = int((labels == "Unknown").sum()) if "Unknown" in labels.cat.categories else 0
    n_labels = int(labels[labels != "Unknown"].nunique())
    _write(args, adata, model)
    if reference is not None and reference.isbacked:
        reference.file.close()
    print(
        f"wrote {args.output}: obs[{key!r}] and obs[{key + '_confidence'!r}] "
        f"({adata.n_obs} cells; {n_labels} labels; {n_unknown} Unknown)"
    )
    if args.save_model is not None:
        print(f"saved the fine-tuned model to {args.save_model}")
    return 0


def _integrate(args: argparse.Namespace) -> int:
    from .._cli_io import make_output_folder, read_data
    from . import tl

    _prepare(args, args.key_added, [args.input])
    make_output_folder(args.prog, args.output)
    adata = read_data(args.prog, args.input, backed=args.backed)
    with results_to_stdout():  # progress bars and messages on stderr
        model = tl.integrate(
            adata,
            batch_key=args.batch_key,
            model=args.model,
            labels_key=args.labels_key,
            layer=args.layer,
            gene_key=args.gene_key,
            key_added=args.key_added,
            max_epochs=args.max_epochs,
            dsbn=args.dsbn,
            batch_size=args.batch_size,
            device=args.device,
            random_state=args.random_state,
            progress=not args.no_progress,
            return_model=True,
        )
    shape = adata.obsm[args.key_added].shape
    _write(args, adata, model)
    print(f"wrote {args.output}: obsm[{args.key_added!r}] {shape}")
    if args.save_model is not None:
        print(f"saved the fine-tuned model to {args.save_model}")
    return 0
