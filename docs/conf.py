"""Sphinx configuration for omicformer.

Build (offline is fine): ``sphinx-build -W -b html docs docs/_build/html``.

Cross-links to other projects' docs (intersphinx) need their ``objects.inv`` files from the
internet. They are fetched only when ``OMICFORMER_DOCS_INTERSPHINX=1`` or on Read the Docs
(``READTHEDOCS=True``); offline builds leave references to third-party types as plain text, and
``nitpicky`` then checks only references into omicformer itself.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import warnings
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

import omicformer  # noqa: E402

# sphinx-autodoc-typehints 3.6 calls a Sphinx API deprecated in Sphinx 9 once per docstring; the
# Python DeprecationWarning (not a Sphinx warning, so -W ignores it) floods the log.
warnings.filterwarnings("ignore", message=r".*_RstSnippetParser\.set_application.*")

# -- Project ------------------------------------------------------------------------------------
project = "omicformer"
author = "omicformer developers"
copyright = f"{date.today():%Y}, {author}"  # noqa: A001
version = release = omicformer.__version__

# -- General ------------------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",  # after napoleon, as its docs ask
]
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "tutorials/**/*.h5ad",
    "tutorials/README.md",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
nitpicky = True
default_role = "literal"

# -- MyST / MyST-NB -----------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "substitution", "attrs_inline"]
myst_heading_anchors = 3
# Tutorials are stored executed in tutorials/ (linked here as docs/tutorials); never run them
# during the docs build.
nb_execution_mode = "off"
nb_merge_streams = True

# -- autodoc / autosummary / napoleon / typehints -----------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # sphinx_autodoc_typehints puts types next to parameters
autodoc_default_options = {"members": True}
autodoc_inherit_docstrings = False  # overrides of torch/Lightning hooks would show their docs
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "comma"
typehints_use_signature = False
typehints_use_signature_return = False
always_document_param_types = False
typehints_document_rtype = True

# -- intersphinx (online only) ------------------------------------------------------------------
# OMICFORMER_DOCS_INTERSPHINX=1 (or a Read the Docs build) fetches the inventories and links
# third-party types; =strict also makes nitpicky check those links.
_INTERSPHINX_ENV = os.environ.get("OMICFORMER_DOCS_INTERSPHINX", "")
_ONLINE = _INTERSPHINX_ENV in ("1", "strict") or os.environ.get("READTHEDOCS", "") == "True"
_STRICT = _INTERSPHINX_ENV == "strict"
_INTERSPHINX = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "pandas": ("https://pandas.pydata.org/pandas-docs/stable/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "mudata": ("https://mudata.readthedocs.io/en/latest/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
    "scvi-tools": ("https://docs.scvi-tools.org/en/stable/", None),
    "lightning": ("https://lightning.ai/docs/pytorch/stable/", None),
    "transformers": ("https://huggingface.co/docs/transformers/main/en/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
}
intersphinx_mapping = _INTERSPHINX if _ONLINE else {}
intersphinx_timeout = 15

# nitpicky checks every cross-reference into omicformer. References to other projects resolve
# only through intersphinx, so they are ignored unless the build is online *and* strict: an
# offline build (or a moved page elsewhere) must not fail ``-W``.
_NOT_OURS = r"(?!omicformer(\.|$)).*"
nitpick_ignore_regex = [
    # return type of dnabert.model.read_checkpoint; not exported (yet) by dnabert.model
    ("py:class", r"omicformer\.dnabert\.model\._checkpoint\.Checkpoint"),
]
if _STRICT:
    nitpick_ignore_regex += [
        # objects that scvi-tools / Lightning / transformers document under other names
        ("py:class", r"scvi\.data\.fields\..*"),
        ("py:class", r"transformers\.models\..*"),
        ("py:class", r"lightning\.pytorch\.core\..*"),
        ("py:class", r"argparse\._SubParsersAction"),
    ]
else:
    nitpick_ignore_regex += [
        (role, _NOT_OURS)
        for role in ("py:class", "py:func", "py:meth", "py:attr", "py:mod", "py:data", "py:obj",
                     "py:exc")  # fmt: skip
    ]

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"omicformer {version}"
html_static_path = ["_static"]
html_show_sphinx = False

# -- Public names: document re-exported objects under their public module ------------------------
# Functions and classes live in private modules (``scgpt/_vocab.py``, ``dnabert/_genome.py``,
# ...) and are re-exported by a public namespace. Point their ``__module__`` at that namespace so
# that type hints and cross-references use the documented, public path.
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


def _publish(namespace: str) -> None:
    mod = importlib.import_module(namespace)
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name, None)
        if not inspect.isclass(obj):  # functions keep theirs: type hints resolve in it
            continue
        owner = getattr(obj, "__module__", "") or ""
        private = any(part.startswith("_") for part in owner.split("."))
        if owner.startswith("omicformer.") and private:
            obj.__module__ = namespace


for _ns in PUBLIC_NAMESPACES:
    _publish(_ns)


# -- Numbers produced by the training scripts ------------------------------------------------------
# scripts/train_default_scgpt.py writes docs/_static/default_scgpt_{loss.png,metrics.json}; the
# DNABERT script may write docs/_static/default_dnabert_*. The pages show them when present and a
# clearly marked placeholder otherwise (so the build never depends on a training run).
STATIC = HERE / "_static"

_LABELS = {
    "knn_accuracy_scgpt_pbmc68k": "kNN accuracy, default scGPT embedding (`pbmc68k_reduced`, `bulk_labels`)",
    "knn_accuracy_pca_pbmc68k": "kNN accuracy, PCA (50 comps) of the same data",
    "train_minutes_cpu": "training time (minutes, CPU)",
    "epochs": "epochs",
    "n_train_cells": "training cells",
    "vocab_size": "vocabulary size (genes + `<pad>`, `<cls>`, `<eoc>`)",
}


def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _last(history: dict, key: str) -> str | None:
    values = history.get(key)
    if isinstance(values, list) and values:
        return _fmt(float(values[-1]))
    return None


def _metrics_table(path: Path, title: str) -> str:
    data = json.loads(path.read_text())
    rows = [(_LABELS.get(k, f"`{k}`"), _fmt(v)) for k, v in data.items()
            if isinstance(v, int | float | str) and not isinstance(v, bool)]  # fmt: skip
    history = data.get("history") if isinstance(data.get("history"), dict) else {}
    for key in ("train_loss", "validation_loss", "train_loss_gen", "train_loss_mvc", "mlm_loss_epoch",
                "mlm_validation_loss"):  # fmt: skip
        last = _last(history, key)
        if last is not None:
            rows.append((f"final `{key}`", last))
    lines = [f"| {title} | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines) + f"\n\n*Read from `docs/_static/{path.name}` when the docs were built.*"


def _placeholder(what: str, script: str) -> str:
    return (
        ":::{admonition} Placeholder: not generated yet\n:class: warning\n\n"
        f"{what} will appear here after `{script}` has run; rebuild the docs then.\n:::"
    )


def _figure(name: str, caption: str) -> str:
    return f"```{{figure}} _static/{name}\n:alt: {caption}\n:width: 520px\n\n{caption}\n```"


def _model_substitutions(prefix: str, script: str, loss_caption: str) -> dict[str, str]:
    metrics = STATIC / f"default_{prefix}_metrics.json"
    loss = STATIC / f"default_{prefix}_loss.png"
    return {
        f"{prefix}_metrics": _metrics_table(metrics, "metric")
        if metrics.is_file()
        else _placeholder("The default model's training numbers", script),
        f"{prefix}_loss_curve": _figure(loss.name, loss_caption)
        if loss.is_file()
        else _placeholder("The loss curve", script),
    }


def _table(rows: list[tuple[str, str]], header: str, source: str) -> str:
    lines = [f"| {header} | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines) + f"\n\n*Read from `{source}` when the docs were built.*"


def _scgpt_architecture() -> str:
    path = ROOT / "src/omicformer/scgpt/_data/default_model/omicformer_config.json"
    if not path.is_file():
        return _placeholder("The default model's architecture", "python scripts/train_default_scgpt.py")
    config = json.loads(path.read_text())
    c = config.get("module_config", {})
    rows = [
        ("`d_model` (official `embsize`)", c.get("d_model")),
        ("layers (`nlayers`)", c.get("nlayers")),
        ("attention heads (`nheads`)", c.get("nhead")),
        ("feed-forward width (`d_hid`)", c.get("d_hid")),
        ("dropout", c.get("dropout")),
        ("bins (`n_bins`)", c.get("n_bins")),
        ("value encoder", c.get("input_emb_style")),
        ("vocabulary size (tokens)", c.get("ntoken")),
        ("`max_len` at inference", config.get("model_settings", {}).get("max_len")),
    ]
    rows = [(a, _fmt(b)) for a, b in rows if b is not None]
    return _table(rows, "default scGPT", "src/omicformer/scgpt/_data/default_model/omicformer_config.json")


def _dnabert_architecture() -> str:
    base = ROOT / "src/omicformer/dnabert/_data"
    rows = []
    for task in ("mlm", "promoter"):
        path = base / f"default_{task}" / "config.json"
        if not path.is_file():
            continue
        c = json.loads(path.read_text())
        meta_path = path.with_name("omicformer_config.json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        k = meta.get("k", "?")
        labels = meta.get("labels")
        rows.append(
            (
                f"`default_{task}`",
                f"k={k}, {c.get('num_hidden_layers')} layers, hidden {c.get('hidden_size')}, "
                f"{c.get('num_attention_heads')} heads, {c.get('max_position_embeddings')} positions"
                + (f", classes {labels}" if labels else ""),
            )
        )
    if not rows:
        return _placeholder("The default DNABERT models' architecture", "the DNABERT default-model script in scripts/")
    return _table(rows, "shipped model", "src/omicformer/dnabert/_data/default_*/")


# -- Command line help, generated from the argparse parsers -------------------------------------
def _cli_help() -> dict[str, str]:
    """``{"cli_scgpt_embed": "```text\n<help>\n```", ...}`` for every (sub)command."""
    import argparse

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


CLI_HELP = _cli_help()

myst_substitutions = {
    **CLI_HELP,
    "scgpt_architecture": _scgpt_architecture(),
    "dnabert_architecture": _dnabert_architecture(),
    **_model_substitutions(
        "scgpt",
        "python scripts/train_default_scgpt.py",
        "Pretraining loss of the default scGPT (generative + MVC + ECS), per epoch.",
    ),
    **_model_substitutions(
        "dnabert",
        "the DNABERT default-model script in scripts/",
        "Span-masked MLM loss of the default DNABERT (k=6) on C. elegans chrX.",
    ),
}


# -- Tutorials: docs/tutorials is a symlink to ../tutorials ------------------------------------
def _has_tutorials() -> bool:
    return any((HERE / "tutorials").glob("*.ipynb")) or any((HERE / "tutorials").glob("*.md"))


def _tutorial_toc(app, docname: str, source: list[str]) -> None:
    """Without notebooks an empty toctree glob would warn (and fail ``-W``): say so instead."""
    if docname == "tutorials" and not _has_tutorials():
        source[0] = source[0].replace(
            "tutorials/*",
            "",
        ).replace(
            "<!-- tutorials-empty -->",
            ":::{note}\nNo tutorial notebooks are in `tutorials/` yet.\n:::",
        )


# -- Every public name must be listed in api.md --------------------------------------------------
def _check_api_coverage(app) -> None:
    """Warn (so ``-W`` fails) about public names that ``api.md`` does not list."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    text = (HERE / "api.md").read_text()
    for namespace in PUBLIC_NAMESPACES:
        mod = importlib.import_module(namespace)
        short = namespace.removeprefix("omicformer.")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # submodules, and constants (documented in the user guides)
            if f"{short}.{name}" not in text.split():
                logger.warning(
                    "%s.%s is public (in __all__) but not listed in docs/api.md; add it to the "
                    "autosummary block of its namespace.",
                    namespace,
                    name,
                    type="omicformer",
                    subtype="api_coverage",
                )


# -- Classes document their own API, not torch's / Lightning's / scvi-tools' ------------------
def _defining_module(obj) -> str:
    for attr in ("fget", "__func__"):
        obj = getattr(obj, attr, obj)
    return getattr(obj, "__module__", None) or ""


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Skip class members defined outside omicformer (their docs live in their projects)."""
    if what == "class" and not skip:
        module = _defining_module(obj)
        if module and not module.startswith("omicformer"):
            return True
    return None


# autosummary cuts a docstring's summary at the first ". "; spell out abbreviated species names in
# the first line so "*C. elegans*" does not become an unterminated "*C.".
_SPECIES = {"*C. elegans*": "*Caenorhabditis elegans*", "*D. melanogaster*": "*Drosophila melanogaster*"}


def _spell_out_species(app, what, name, obj, options, lines: list[str]) -> None:
    if lines:
        for short, full in _SPECIES.items():
            lines[0] = lines[0].replace(short, full)


def _check_cli_coverage(app) -> None:
    """Warn about commands whose help is not shown in ``cli.md``."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    text = (HERE / "cli.md").read_text()
    for key in CLI_HELP:
        if "{{ " + key + " }}" not in text:
            logger.warning(
                "docs/cli.md does not show %s; add a section with {{ %s }}.",
                key,
                key,
                type="omicformer",
                subtype="cli_coverage",
            )


def setup(app) -> None:
    app.connect("builder-inited", _check_cli_coverage)
    app.connect("autodoc-skip-member", _skip_foreign_members)
    app.connect("autodoc-process-docstring", _spell_out_species)
    app.connect("source-read", _tutorial_toc)
    app.connect("builder-inited", _check_api_coverage)
