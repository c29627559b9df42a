"""Sphinx configuration for omicformer.

Build (offline is fine): ``sphinx-build -W -b html docs docs/_build/html``.

Cross-links to other projects' docs (intersphinx) need their ``objects.inv`` files from the
internet. They are fetched only when ``OMICFORMER_DOCS_INTERSPHINX=1`` or on Read the Docs
(``READTHEDOCS=True``); offline builds leave references to third-party types as plain text, and
``nitpicky`` then checks only references into omicformer itself.
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE / "_ext"))

import omicformer  # noqa: E402

# sphinx-autodoc-typehints 3.6 calls a Sphinx API deprecated in Sphinx 9 once per docstring; the
# Python DeprecationWarning (not a Sphinx warning, so -W ignores it) floods the log.
warnings.filterwarnings("ignore", message=r".*_RstSnippetParser\.set_application.*")

# -- Project ------------------------------------------------------------------------------------
project = "omicformer"
author = "omicformer developers"
copyright = f"{date.today():%Y}, {author}"
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
    "omicformer_docs",  # docs/_ext: generated content, coverage checks, autodoc hooks
]
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "tutorials/README.md",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
nitpicky = True
# A private dataclass in the signature of CellCollator.tokenize (inherited by every collator).
nitpick_ignore = [("py:class", "omicformer.scgpt._tokenize.TokenizedCell")]
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
        for role in (
            "py:class",
            "py:func",
            "py:meth",
            "py:attr",
            "py:mod",
            "py:data",
            "py:obj",
            "py:exc",
        )
    ]

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"omicformer {version}"
html_static_path = ["_static"]
html_show_sphinx = False

# -- Generated content ----------------------------------------------------------------------------
# CLI help texts, and the default models' shapes, numbers and loss curves (placeholders until the
# training scripts have written them), as MyST substitutions: see docs/_ext/omicformer_docs.py.
from omicformer_docs import substitutions  # noqa: E402

myst_substitutions = substitutions()
