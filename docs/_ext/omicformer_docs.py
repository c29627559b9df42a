"""Local Sphinx extension for the omicformer docs.

* Publishes re-exported classes under their public module path.
* Generates page content that must follow the code and the training runs: the CLI help (from the
  argparse parsers) and the default models' shapes, numbers and loss curves (from the model
  folders and ``docs/_static/default_*``), as MyST substitutions. Missing numbers become a
  clearly marked placeholder, so the build never depends on a training run.
* Fails ``-W`` builds when a public class/function is missing from ``api.md`` or a command from
  ``cli.md``.
* Keeps class pages to omicformer's own members, and handles the tutorials folder being empty.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

from sphinx.util import logging

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
STATIC = DOCS / "_static"

PUBLIC_NAMESPACES = [
    "omicformer.datasets",
    "omicformer.scgpt",
    "omicformer.scgpt.pp",
    "omicformer.scgpt.tl",
    "omicformer.scgpt.pl",
    "omicformer.scgpt.model",
    "omicformer.scgpt.module",
    "omicformer.scgpt.train",
    "omicformer.dnabert.pp",
    "omicformer.dnabert.tl",
    "omicformer.dnabert.pl",
    "omicformer.dnabert.model",
    "omicformer.dnabert.module",
    "omicformer.dnabert.train",
    "omicformer.dnabert.tasks",
]


# -- public names ---------------------------------------------------------------------------------
_ORIGINAL_MODULE: dict[tuple[str, str], str] = {}


def publish_classes() -> None:
    """Point ``__module__`` of re-exported classes at their public namespace.

    Classes live in private modules (``scgpt/_vocab.py``, ``dnabert/_genome.py``, ...) and are
    re-exported by a public namespace; type hints and cross-references then use the documented
    path. Functions keep their module: sphinx-autodoc-typehints resolves their (forward
    referenced) annotations in it.
    """
    for namespace in PUBLIC_NAMESPACES:
        mod = importlib.import_module(namespace)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if not inspect.isclass(obj):
                continue
            owner = getattr(obj, "__module__", "") or ""
            if owner.startswith("omicformer.") and any(p.startswith("_") for p in owner.split(".")):
                _ORIGINAL_MODULE[(namespace, name)] = owner
                obj.__module__ = namespace


def follow_published(app, modname: str, fullname: str) -> str | None:
    """Tell ``sphinx.ext.viewcode`` where a published class is defined (for [source] links)."""
    return _ORIGINAL_MODULE.get((modname, fullname.split(".")[0]))


def public_objects() -> list[str]:
    """``["scgpt.pp.bin_expression", ...]``: every public class and function."""
    names = []
    for namespace in PUBLIC_NAMESPACES:
        mod = importlib.import_module(namespace)
        short = namespace.removeprefix("omicformer.")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if inspect.isclass(obj) or inspect.isfunction(obj):  # not submodules or constants
                names.append(f"{short}.{name}")
    return names


# -- formatting helpers ---------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|")


def _table(rows: list[tuple[str, str]], header: tuple[str, ...], source: str) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines) + f"\n\n*Read from `{source}` when the docs were built.*"


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalars of a nested dict as ``("a › b", value)``; numeric lists as their last value."""
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name} › ")
        elif isinstance(value, list):
            if value and all(isinstance(v, int | float) for v in value):
                rows.append((f"{name} (last of {len(value)})", value[-1]))
        else:
            rows.append((name, value))
    return rows


def placeholder(what: str, script: str) -> str:
    return (
        ":::{admonition} Placeholder: not generated yet\n:class: warning\n\n"
        f"{what} will appear here after `{script}` has run; rebuild the docs then.\n:::"
    )


def _figure(path: Path, caption: str) -> str:
    return f"```{{figure}} _static/{path.name}\n:alt: {caption}\n:width: 560px\n\n{caption}\n```"


# -- scGPT default model --------------------------------------------------------------------------
SCGPT_SCRIPT = "python scripts/train_default_scgpt.py"
SCGPT_LABELS = {
    "knn_accuracy_scgpt_pbmc68k": "kNN accuracy, default scGPT embedding",
    "knn_accuracy_pca_pbmc68k": "kNN accuracy, PCA (50 components) of the same data",
    "train_minutes_cpu": "training time (minutes, CPU)",
    "n_train_cells": "training cells",
    "vocab_size": "vocabulary size (genes + `<pad>`, `<cls>`, `<eoc>`)",
    "pca_init": "gene embeddings initialised from PCA loadings",
}


def _knn_table(knn: dict[str, dict], source: str) -> str:
    """Zero-shot kNN accuracy of the default embedding vs PCA, one row per labelled data set."""
    rows = [
        (f"`{name}`", f"`{r['labels']}`", _fmt(r["cells"]),
         "yes" if r["in_pretraining"] else "**no** (held out)",
         f"{r['scgpt']:.3f}", f"{r['pca']:.3f}", f"{r['ratio']:.2f}x")
        for name, r in knn.items()
    ]  # fmt: skip
    header = ("data set", "labels", "cells", "in pretraining", "default scGPT", "PCA-50",
              "scGPT / PCA")  # fmt: skip
    return _table(rows, header, source)


def scgpt_substitutions() -> dict[str, str]:
    out = {}
    config = ROOT / "src/omicformer/scgpt/_data/default_model/omicformer_config.json"
    if config.is_file():
        cfg = json.loads(config.read_text())
        c = cfg.get("module_config", {})
        rows = [
            ("`d_model` (official `embsize`)", c.get("d_model")),
            ("layers (`nlayers`)", c.get("nlayers")),
            ("attention heads (`nheads`)", c.get("nhead")),
            ("feed-forward width (`d_hid`)", c.get("d_hid")),
            ("dropout", c.get("dropout")),
            ("bins (`n_bins`)", c.get("n_bins")),
            ("value encoder", c.get("input_emb_style")),
            ("vocabulary (tokens)", c.get("ntoken")),
            ("`max_len` at inference", cfg.get("model_settings", {}).get("max_len")),
        ]
        out["scgpt_architecture"] = _table(
            [(a, _fmt(b)) for a, b in rows if b is not None],
            ("default scGPT", "value"),
            str(config.relative_to(ROOT)),
        )
    else:
        out["scgpt_architecture"] = placeholder("The default model's architecture", SCGPT_SCRIPT)

    metrics = STATIC / "default_scgpt_metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        history = data.pop("history", {}) if isinstance(data.get("history"), dict) else {}
        knn = data.pop("zero_shot_knn", None)
        source = f"docs/_static/{metrics.name}"
        out["scgpt_knn"] = (
            _knn_table(knn, source)
            if isinstance(knn, dict)
            else placeholder("The zero-shot kNN table", SCGPT_SCRIPT)
        )
        rows = [(SCGPT_LABELS.get(k, f"`{k}`"), _fmt(v)) for k, v in _flatten(data)]
        for key in ("train_loss", "validation_loss", "train_loss_gen", "train_loss_mvc",
                    "train_loss_ecs"):  # fmt: skip
            if history.get(key):
                rows.append((f"final `{key}`", _fmt(float(history[key][-1]))))
        out["scgpt_metrics"] = _table(rows, ("metric", "value"), f"docs/_static/{metrics.name}")
    else:
        out["scgpt_metrics"] = placeholder("The default model's numbers", SCGPT_SCRIPT)
        out["scgpt_knn"] = placeholder("The zero-shot kNN table", SCGPT_SCRIPT)

    loss = STATIC / "default_scgpt_loss.png"
    out["scgpt_loss_curve"] = (
        _figure(loss, "Pretraining loss of the default scGPT, per optimiser step.")
        if loss.is_file()
        else placeholder("The loss curve", SCGPT_SCRIPT)
    )
    return out


# -- DNABERT default models -----------------------------------------------------------------------
DNABERT_SCRIPT = "python scripts/train_default_dnabert.py"


def dnabert_substitutions() -> dict[str, str]:
    out = {}
    rows = []
    for task in ("mlm", "promoter"):
        path = ROOT / f"src/omicformer/dnabert/_data/default_{task}/config.json"
        if not path.is_file():
            continue
        c = json.loads(path.read_text())
        meta_path = path.with_name("omicformer_config.json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        shape = (
            f"k={meta.get('k', '?')}, {c.get('num_hidden_layers')} layers, hidden "
            f"{c.get('hidden_size')}, {c.get('num_attention_heads')} heads, "
            f"{c.get('max_position_embeddings')} positions"
        )
        labels = meta.get("labels")
        rows.append((f"`default_{task}`", shape + (f"; classes {_fmt(labels)}" if labels else "")))
    out["dnabert_architecture"] = (
        _table(rows, ("shipped model", "shape"), "src/omicformer/dnabert/_data/default_*/")
        if rows
        else placeholder("The default DNABERT models' shapes", DNABERT_SCRIPT)
    )

    metrics = STATIC / "default_dnabert_metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        parts = []
        tests = data.pop("promoter_test", None)
        if isinstance(tests, dict) and tests:
            cols = ["mcc", "f1", "auroc", "accuracy", "n"]
            test_rows = [
                (f"`{name}`", *(_fmt(m.get(c, "")) for c in cols))
                for name, m in tests.items()
                if isinstance(m, dict)
            ]
            header = ("`default_promoter`, test split", "MCC", "F1", "AUROC", "accuracy", "n")
            parts.append(_table(test_rows, header, f"docs/_static/{metrics.name}"))
        rows = [(f"`{k}`", _fmt(v)) for k, v in _flatten(data)]
        parts.append(_table(rows, ("training", "value"), f"docs/_static/{metrics.name}"))
        out["dnabert_metrics"] = "\n\n".join(parts)
    else:
        out["dnabert_metrics"] = placeholder("The default models' numbers", DNABERT_SCRIPT)

    for name in ("default_dnabert_mlm_loss.png", "default_dnabert_loss.png"):
        loss = STATIC / name
        if loss.is_file():
            out["dnabert_loss_curve"] = _figure(
                loss,
                "Span-masked MLM loss of the default DNABERT (k=6) on C. elegans chrX and "
                "D. melanogaster upstream regions.",
            )
            break
    else:
        out["dnabert_loss_curve"] = placeholder("The MLM loss curve", DNABERT_SCRIPT)
    return out


# -- command line help ----------------------------------------------------------------------------
def cli_help() -> dict[str, str]:
    """``{"cli_scgpt_embed": "```text\\n<help>\\n```", ...}`` for every (sub)command."""
    from omicformer.cli import build_parser

    os.environ["COLUMNS"] = "92"  # argparse wraps to this width
    out: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        key = "_".join(["cli", *words]).replace("-", "_") if words else "cli_main"
        out[key] = "```text\n" + parser.format_help().rstrip() + "\n```"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*words, name])

    walk(build_parser(), [])
    return out


def substitutions() -> dict[str, str]:
    return {**cli_help(), **scgpt_substitutions(), **dnabert_substitutions()}


# -- build-time checks ----------------------------------------------------------------------------
def check_coverage(app) -> None:
    """Warn (so ``-W`` fails) about public objects missing from api.md, commands from cli.md."""
    api = (DOCS / "api.md").read_text().split()
    for name in public_objects():
        if name not in api:
            logger.warning(
                "omicformer.%s is public (in __all__) but not listed in docs/api.md; add it to "
                "the autosummary block of its namespace.",
                name,
                type="omicformer",
                subtype="api_coverage",
            )
    cli = (DOCS / "cli.md").read_text()
    for key in cli_help():
        if "{{ " + key + " }}" not in cli:
            logger.warning(
                "docs/cli.md does not show the help of a command; add {{ %s }} to it.",
                key,
                type="omicformer",
                subtype="cli_coverage",
            )


# -- autodoc hooks --------------------------------------------------------------------------------
def _defining_module(obj: Any) -> str:
    for attr in ("fget", "__func__"):
        obj = getattr(obj, attr, obj)
    owner = getattr(obj, "__objclass__", None)  # methods of builtins (tuple.count, ...)
    if owner is not None:
        return getattr(owner, "__module__", "") or ""
    return getattr(obj, "__module__", None) or ""


def skip_foreign_members(app, what, name, obj, skip, options):
    """Skip class members defined outside omicformer (torch, Lightning, scvi-tools, builtins)."""
    if what == "class" and not skip:
        module = _defining_module(obj)
        if module and not module.startswith("omicformer"):
            return True
    return None


# autosummary cuts a docstring's summary at the first ". "; spell out abbreviated species names
# in the first line so that "*C. elegans*" does not become an unterminated "*C.".
_SPECIES = {
    "*C. elegans*": "*Caenorhabditis elegans*",
    "*D. melanogaster*": "*Drosophila melanogaster*",
}


def spell_out_species(app, what, name, obj, options, lines: list[str]) -> None:
    if lines:
        for short, full in _SPECIES.items():
            lines[0] = lines[0].replace(short, full)


# -- tutorials ------------------------------------------------------------------------------------
def tutorials_toc(app, docname: str, source: list[str]) -> None:
    """``docs/tutorials`` links to ``../tutorials``; with no notebook there, an empty toctree
    glob would warn (and fail ``-W``), so the page says so instead."""
    folder = DOCS / "tutorials"
    if docname == "tutorials" and not (any(folder.glob("*.ipynb")) or any(folder.glob("*.md"))):
        source[0] = (
            source[0]
            .replace("tutorials/*", "")
            .replace(
                "<!-- tutorials-empty -->",
                ":::{note}\nNo tutorial notebooks are in `tutorials/` yet.\n:::",
            )
        )


def setup(app) -> dict[str, Any]:
    publish_classes()
    app.connect("builder-inited", check_coverage)
    app.connect("viewcode-follow-imported", follow_published)
    app.connect("autodoc-skip-member", skip_foreign_members)
    app.connect("autodoc-process-docstring", spell_out_species)
    app.connect("source-read", tutorials_toc)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
