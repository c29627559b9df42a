"""scGPT test fixtures: small data, and checkpoints written in the official format.

The "official" reference below is written independently of ``omicformer.scgpt.module`` from the
documented official code: torch ``nn.TransformerEncoder`` layers, flash-attn key names
(``self_attn.Wqkv``), the official ``binning``/``_digitize`` and ``embed_data`` token layout.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from torch import nn

N_GENES = 50
SPECIALS = ["<pad>", "<cls>", "<eoc>"]


# ---------------------------------------------------------------- official-like reference model
class _RefGeneEncoder(nn.Module):
    def __init__(self, n, d, pad):
        super().__init__()
        self.embedding = nn.Embedding(n, d, padding_idx=pad)
        self.enc_norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.enc_norm(self.embedding(x))


class _RefValueEncoder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.linear1 = nn.Linear(1, d)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x):
        x = torch.clamp(x.unsqueeze(-1), max=512)
        return self.dropout(self.norm(self.linear2(self.activation(self.linear1(x)))))


class RefTransformerModel(nn.Module):
    """Official ``TransformerModel`` structure with torch layers (use_fast_transformer=False)."""

    def __init__(self, ntoken, d, nhead, d_hid, nlayers, pad, n_cls=1):
        super().__init__()
        self.encoder = _RefGeneEncoder(ntoken, d, pad)
        self.value_encoder = _RefValueEncoder(d)
        layer = nn.TransformerEncoderLayer(d, nhead, d_hid, 0.0, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.decoder = nn.Module()
        self.decoder.fc = nn.Sequential(
            nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, 1)
        )
        self.cls_decoder = nn.Module()
        self.cls_decoder._decoder = nn.ModuleList(
            [
                nn.Linear(d, d),
                nn.ReLU(),
                nn.LayerNorm(d),
                nn.Linear(d, d),
                nn.ReLU(),
                nn.LayerNorm(d),
            ]
        )
        self.cls_decoder.out_layer = nn.Linear(d, n_cls)
        self.mvc_decoder = nn.Module()
        self.mvc_decoder.gene2query = nn.Linear(d, d)
        self.mvc_decoder.W = nn.Linear(d, d, bias=False)
        for p in self.parameters():  # non-trivial LayerNorm/bias values so mistakes show
            with torch.no_grad():
                p.add_(0.05 * torch.randn_like(p))

    def encode(self, src, values, pad_mask):
        total = self.encoder(src) + self.value_encoder(values)
        return self.transformer_encoder(total, src_key_padding_mask=pad_mask)


def official_bin_range(row: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per entry of one cell, the official ``(right, left)`` digitize pair (0, 0 for zeros).

    Official ``binning``: the quantile edges come from the cell's non-zero values only,
    ``np.quantile(nonzero, np.linspace(0, 1, n_bins - 1))``; ``left`` is ``np.digitize(x, edges)``
    and ``right`` is ``np.digitize(x, edges, right=True)``. The two differ exactly when ``x`` equals
    an edge, by the number of edges equal to ``x``; they are cross-checked here against that
    edge count, written without ``np.digitize``.
    """
    row = np.asarray(row, dtype=np.float64)
    right = np.zeros(row.shape, dtype=np.int64)
    left = np.zeros(row.shape, dtype=np.int64)
    expressed = row != 0
    if not expressed.any():
        return right, left
    values = row[expressed]
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    assert edges.shape == (n_bins - 1,)
    left[expressed] = np.digitize(values, edges)
    right[expressed] = np.digitize(values, edges, right=True)
    for x, r, lft in zip(values, right[expressed], left[expressed], strict=True):
        assert lft == np.count_nonzero(edges <= x) and r == np.count_nonzero(edges < x)
    return right, left


def official_binning(row: np.ndarray, n_bins: int, rng=None) -> np.ndarray:
    """Official ``scgpt.preprocess.binning`` with its ``_digitize(side='both')``.

    Each non-zero value gets ``ceil(u * (right - left) + left)`` with ``u`` uniform in [0, 1)
    (the global NumPy state as the official code, or ``rng``): ``left`` when untied, otherwise a
    uniform integer in ``right + 1 .. left``. Zeros stay 0.
    """
    right, left = official_bin_range(row, n_bins)
    expressed = np.asarray(row) != 0
    u = np.random.rand(int(expressed.sum())) if rng is None else rng.random(int(expressed.sum()))
    out = np.zeros(np.shape(row), dtype=np.int64)
    r, lft = right[expressed], left[expressed]
    out[expressed] = np.ceil(u * (r - lft) + lft).astype(np.int64)
    return out


def official_embed(ref: RefTransformerModel, X: np.ndarray, gene_ids, vocab, max_len, pad_to_max):
    """``embed_data``: <cls>+non-zero genes, [pad_value]+bins, pad, CLS output, L2 norm."""
    pad_id, cls_id, pad_value = vocab["<pad>"], vocab["<cls>"], -2.0
    embs = []
    for row in X:
        nz = np.nonzero(row)[0]
        genes = np.concatenate([[cls_id], gene_ids[nz]])
        vals = np.concatenate([[pad_value], official_binning(row[nz], 51)]).astype(np.float32)
        assert len(genes) <= max_len
        L = max_len if pad_to_max else len(genes)
        g = np.full(L, pad_id)
        v = np.full(L, pad_value, dtype=np.float32)
        g[: len(genes)], v[: len(genes)] = genes, vals
        g, v = torch.tensor(g)[None], torch.tensor(v)[None]
        with torch.no_grad():
            embs.append(ref.encode(g, v, g.eq(pad_id))[0, 0].numpy())
    embs = np.stack(embs)
    return embs / np.linalg.norm(embs, axis=1, keepdims=True)


def write_official_checkpoint(
    path, *, flash_keys="Wqkv", d=32, nhead=4, nlayers=2, n_cls=7, extra=True
):
    """Write args.json, vocab.json, best_model.pt like a released scGPT checkpoint."""
    path.mkdir(parents=True, exist_ok=True)
    genes = [f"G{i}" for i in range(N_GENES)] + ["UNUSED1", "UNUSED2"]
    vocab = {g: i for i, g in enumerate(genes)}  # specials appended by the loader
    full = dict(vocab)
    for s in SPECIALS:
        full[s] = len(full)
    torch.manual_seed(0)
    ref = RefTransformerModel(len(full), d, nhead, 2 * d, nlayers, full["<pad>"], n_cls).eval()
    state = {}
    for k, v in ref.state_dict().items():
        if flash_keys == "Wqkv":
            k = k.replace("self_attn.in_proj_", "self_attn.Wqkv.")
        elif flash_keys == "_impl":
            k = k.replace("self_attn.in_proj_", "self_attn._impl.Wqkv.")
            k = k.replace("self_attn.out_proj.", "self_attn._impl.out_proj.")
        state[k] = v.clone()
    if extra:
        state["flag_encoder.weight"] = torch.randn(2, d)
        state["grad_reverse_discriminator._decoder.0.weight"] = torch.randn(d, d)
    torch.save(state, path / "best_model.pt")
    (path / "vocab.json").write_text(json.dumps(vocab))
    args = {
        "embsize": d, "nheads": nhead, "d_hid": 2 * d, "nlayers": nlayers, "n_layers_cls": 3,
        "dropout": 0.2, "pad_token": "<pad>", "pad_value": -2, "mask_value": -1, "n_bins": 51,
        "input_emb_style": "continuous", "MVC": True,
    }  # fmt: skip
    (path / "args.json").write_text(json.dumps(args))
    return ref, full


@pytest.fixture(scope="session")
def official_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("scGPT_tiny")
    ref, vocab = write_official_checkpoint(path)
    return path, ref, vocab


@pytest.fixture(scope="session")
def continuous_adata_factory():
    """Cells x genes with continuous values (no ties) and ~50% zeros; genes G0..G49 + 2 unknown."""

    def make(n_obs=40, seed=0):
        rng = np.random.default_rng(seed)
        X = rng.gamma(2.0, 3.0, size=(n_obs, N_GENES + 2)).astype(np.float32)
        X[rng.random(X.shape) < 0.5] = 0
        X[:, 0] = rng.gamma(2.0, 3.0, size=n_obs) + 0.1  # every cell expresses something
        a = ad.AnnData(sp.csr_matrix(X))
        a.var_names = [f"G{i}" for i in range(N_GENES)] + ["NOTAGENE1", "NOTAGENE2"]
        a.obs_names = [f"c{i}" for i in range(n_obs)]
        return a

    return make


@pytest.fixture
def counts_adata():
    rng = np.random.default_rng(1)
    X = rng.poisson(1.5, size=(30, N_GENES)).astype(np.float32)
    X[:, 0] += 1
    a = ad.AnnData(sp.csr_matrix(X))
    a.var_names = [f"G{i}" for i in range(N_GENES)]
    a.obs["batch"] = ["a"] * 15 + ["b"] * 15
    a.layers["counts"] = a.X.copy()
    return a


@pytest.fixture(scope="session")
def official():
    """The official-behaviour reference helpers, for tests (conftest is not importable)."""
    import types

    return types.SimpleNamespace(
        binning=official_binning,
        bin_range=official_bin_range,
        embed=official_embed,
        write_checkpoint=write_official_checkpoint,
        RefTransformerModel=RefTransformerModel,
    )


def marker_cells_data(
    n_per_type: int, seed: int, shift: bool = False, *, jitter: bool = True, empty_gene: int = -1
) -> ad.AnnData:
    """Types ``T``, ``B``, ``Mono`` (``obs["cell_type"]``) over genes G0..G59, 20 markers each.

    ``shift``: cells unlike any of them, which express only genes 50-59 (far from every
    reference cell in the embedding). Poisson counts (a cell with none gets 1 of gene
    ``empty_gene``), times a log-normal factor with ``jitter``: no two values of a cell tie, so
    binning draws nothing.
    """
    n_genes = 60
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for t, name in enumerate(["T", "B", "Mono"]):
        lam = np.full(n_genes, 0.6)
        lam[20 * t : 20 * (t + 1)] = 5.0
        if shift:
            lam[:] = 0.0
            lam[50:] = 20.0
        rows.append(rng.poisson(lam, size=(n_per_type, n_genes)))
        labels += [name] * n_per_type
    X = np.vstack(rows).astype(np.float32)
    X[X.sum(1) == 0, empty_gene] = 1
    if jitter:
        X *= rng.lognormal(0.0, 0.3, size=X.shape).astype(np.float32)
    obs = pd.DataFrame({"cell_type": labels}, index=[f"s{seed}c{i}" for i in range(len(labels))])
    var = pd.DataFrame(index=[f"G{i}" for i in range(n_genes)])
    return ad.AnnData(sp.csr_matrix(X), obs=obs, var=var)


@pytest.fixture(scope="session")
def marker_cells():
    """:func:`marker_cells_data`, for tests (conftest is not importable)."""
    return marker_cells_data


@pytest.fixture(scope="module")
def marker_pretrained(marker_cells):
    """A tiny random ScGPT over ``marker_cells``' genes (one per module: tests may train it)."""
    from omicformer.scgpt.model import ScGPT

    a = marker_cells(4, seed=9)
    ScGPT.setup_anndata(a)
    return ScGPT(a, d_model=32, n_layers=1, n_heads=2, dropout=0.0, random_state=0)


@pytest.fixture(scope="module")
def marker_ref(marker_cells) -> ad.AnnData:
    """30 ``marker_cells`` of each type, set up for ScGPTClassifier (``cell_type``)."""
    from omicformer.scgpt.model import ScGPTClassifier

    a = marker_cells(30, seed=0)
    ScGPTClassifier.setup_anndata(a, labels_key="cell_type")
    return a


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train faster single-threaded, above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def backed(adata, tmp_path):
    """The module's ``adata`` fixture written to an h5ad and opened ``backed="r"``."""
    adata.write_h5ad(tmp_path / "cells.h5ad")
    b = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    yield b
    b.file.close()


# ---------------------------------------------------------------- multi-process (DDP) scripts
@pytest.fixture
def run_script(tmp_path):
    """Run Python source in a fresh interpreter in ``tmp_path``, e.g. a two-process DDP job.

    ``run(source, *args)`` fails the test with the output's tail unless the process exits 0, and
    returns ``(output, results)``: stdout + stderr, and ``{rank: numbers}`` from every
    ``RESULT <rank> <x.xxxxxx> ...`` the script printed (numbers with 6 decimals, so lines of
    two ranks that run together still parse).
    """
    import re
    import subprocess
    import sys

    def run(source: str, *args: str) -> tuple[str, dict[str, tuple[str, ...]]]:
        script = tmp_path / "script.py"
        script.write_text(source)
        proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        found = re.findall(r"RESULT (\d)((?: -?\d+\.\d{6})+)", out)
        return out, {rank: tuple(nums.split()) for rank, nums in found}

    return run


@pytest.fixture
def runner_call(monkeypatch) -> dict:
    """Stand-in for the shared training runner used by the model classes' ``train``.

    The next ``run_training`` call records its keyword arguments and ``plan`` in the returned
    dict and raises ``RuntimeError("stop")`` instead of training.
    """
    import omicformer.scgpt.model._training as training

    seen: dict = {}

    def fake_run_training(plan, train, collate_fn, **kwargs):
        seen.update(kwargs, plan=plan)
        raise RuntimeError("stop")

    monkeypatch.setattr(training, "run_training", fake_run_training)
    return seen


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    """Simulated Perturb-seq screen: 300 cells x 40 genes, 6 singles, 4 doubles, 50 controls."""
    from omicformer.datasets import perturbseq_simulation

    return perturbseq_simulation(n_cells=300, n_genes=40, n_singles=6, n_doubles=4, random_state=0)


TWO_BATCH_GENES = 60
TWO_BATCH_TYPES = ["T", "B", "Mono"]


def _two_batch_cells(n_per_type: int = 12, seed: int = 0) -> ad.AnnData:
    """Two batches x three cell types: type t boosts genes 20t..20t+19; batch "b" also has
    genes 0-9 tripled and genes 50-59 silenced (a batch effect on top of the biology)."""
    rng = np.random.default_rng(seed)
    rows, types, batches = [], [], []
    for batch in ("a", "b"):
        for t, name in enumerate(TWO_BATCH_TYPES):
            lam = np.full(TWO_BATCH_GENES, 0.8)
            lam[20 * t : 20 * (t + 1)] = 5.0
            if batch == "b":
                lam[:10] *= 3
                lam[50:] = 0.0
            rows.append(rng.poisson(lam, size=(n_per_type, TWO_BATCH_GENES)))
            types += [name] * n_per_type
            batches += [batch] * n_per_type
    X = np.vstack(rows).astype(np.float32)
    X[X.sum(1) == 0, 1] = 1
    obs = pd.DataFrame({"cell_type": types, "batch": batches},
                       index=[f"c{i}" for i in range(len(types))])  # fmt: skip
    return ad.AnnData(
        sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(TWO_BATCH_GENES)])
    )


@pytest.fixture(scope="session")
def two_batches():
    """Factory of small two-batch data, ``two_batches(n_per_type=12, seed=0)``."""
    return _two_batch_cells


@pytest.fixture(scope="module")
def two_batch_pretrained(two_batches):
    """A tiny (untrained) scGPT over the 60 genes of ``two_batches``, standing in for a
    pretrained model (one per test module)."""
    from omicformer.scgpt.model import ScGPT

    a = two_batches(2, seed=9)
    ScGPT.setup_anndata(a)
    return ScGPT(a, d_model=32, n_layers=1, n_heads=2, dropout=0.0, random_state=0)


# ------------------------------- tl.annotate and ScGPTClassifier (test_annotate, test_classifier)
def annotate_cells_data(n_per_type: int, seed: int) -> ad.AnnData:
    """:func:`marker_cells_data` in plain Poisson counts (8x on each type's 20 markers)."""
    return marker_cells_data(n_per_type, seed, jitter=False, empty_gene=0)


@pytest.fixture(scope="session")
def annotate_cells():
    """:func:`annotate_cells_data`, for tests."""
    return annotate_cells_data


@pytest.fixture(scope="module")
def clf_pretrained():
    """A tiny (untrained) scGPT over the 60 genes, standing in for a pretrained model."""
    from omicformer.scgpt.model import ScGPT

    a = annotate_cells_data(4, seed=9)
    ScGPT.setup_anndata(a)
    return ScGPT(a, d_model=32, n_layers=1, n_heads=2, dropout=0.0, random_state=0)


@pytest.fixture(scope="module")
def clf_ref_query():
    """Reference (30 cells per type) and query (15) of :func:`annotate_cells_data`."""
    return annotate_cells_data(30, seed=0), annotate_cells_data(15, seed=1)


@pytest.fixture(scope="module")
def clf_trained(clf_ref_query, clf_pretrained):
    """A ScGPTClassifier fine-tuned 8 epochs on the reference of ``clf_ref_query``."""
    from omicformer.scgpt.model import ScGPTClassifier

    ref, _ = clf_ref_query
    ref = ref.copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(clf_pretrained, ref)
    with torch.random.fork_rng():
        clf.train(
            max_epochs=8, lr=3e-3, batch_size=16, accelerator="cpu", enable_progress_bar=False
        )
    return clf


# ------------------------------------ perturbation (test_perturbation, test_predict_perturbation)
def _sim_genes_of(condition: str, control: str = "ctrl") -> list[str]:
    """Perturbed genes of a condition string, parsed here by hand."""
    return [g for g in condition.split("+") if g != control]


@pytest.fixture(scope="module")
def default_vocab() -> dict[str, int]:
    """The shipped default model's vocabulary (symbol -> token id)."""
    from omicformer.scgpt._resolve import DEFAULT_MODEL_DIR

    return json.loads((DEFAULT_MODEL_DIR / "vocab.json").read_text())


@pytest.fixture(scope="module")
def sim_names(sim) -> dict:
    """Conditions and genes of the simulated screen, sorted out by hand."""
    from itertools import combinations

    conds = sorted(set(sim.obs["condition"].astype(str)) - {"ctrl"})
    singles = [c for c in conds if c.endswith("+ctrl")]
    combos = [c for c in conds if not c.endswith("+ctrl")]
    single_genes = [_sim_genes_of(c)[0] for c in singles]
    perturbed = {g for c in conds for g in _sim_genes_of(c)}
    others = [g for g in sim.var_names if g not in perturbed]
    pairs = {frozenset(_sim_genes_of(c)) for c in combos}
    new_pair = next(f"{a}+{b}" for a, b in combinations(single_genes, 2) if {a, b} not in pairs)
    unseen = [f"{others[0]}+{others[1]}", f"{others[2]}+ctrl", new_pair]
    return {"conditions": conds, "singles": singles, "combos": combos,
            "single_genes": single_genes, "others": others, "unseen": unseen}  # fmt: skip


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    """100 cells x 50 genes ``G0..G49`` of Poisson counts; cell i also expresses gene i."""
    rng = np.random.default_rng(0)
    lam = rng.gamma(1.0, 1.0, size=(1, 50))
    return sp.csr_matrix(rng.poisson(lam, size=(100, 50)).astype(np.float32) + np.eye(100, 50))


@pytest.fixture(scope="module")
def model_cells(counts):
    """AnnData of ``counts`` (or of given counts): batches a/b, cell types, ``counts`` layer."""

    def make(x: sp.csr_matrix | None = None) -> ad.AnnData:
        obs = pd.DataFrame({"batch": np.repeat(["a", "b"], 50),
                            "cell_type": np.tile(["T", "B", "NK", "T"], 25)})  # fmt: skip
        obs.index, genes = [f"c{i}" for i in range(100)], [f"G{i}" for i in range(50)]
        a = ad.AnnData((counts if x is None else x).copy(), obs=obs, var=pd.DataFrame(index=genes))
        a.layers["counts"], a.var["symbol"] = a.X.copy(), genes
        return a

    return make
