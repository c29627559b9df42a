"""ScGPTPerturbation setup and training: argument checks, the default schedule, validation split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omicformer.scgpt.model import ScGPTPerturbation

pytestmark = pytest.mark.usefixtures("one_thread")


def _genes_of(condition: str, control: str = "ctrl") -> list[str]:
    """Perturbed genes of a condition string, parsed here by hand."""
    return [g for g in condition.split("+") if g != control]


def test_default_schedule_keeps_short_passes_and_shrinks_long_ones():
    from omicformer.scgpt.model._perturbation_schedule import default_cell_passes, default_schedule

    # 60,000 cell passes up to 256 genes a pass, then 60,000 * (256 / genes) ** 2
    assert [default_cell_passes(n) for n in (40, 200, 256, 512, 1536)] == [
        60_000, 60_000, 60_000, 15_000, 1_667
    ]  # fmt: skip
    assert default_schedule(4_900, 200, 64) == (12, None)  # 60,000 / 4,900 = 12.2 epochs
    assert default_schedule(100, 200, 64) == (15, None)  # at most 15 epochs
    assert default_schedule(1_000, 1_536, 64) == (2, None)  # 1,667 / 1,000 = 1.7
    assert default_schedule(3_000, 1_536, 64) == (1, 27)  # 1,667 / 64 = 26.05 steps
    assert default_schedule(68_000, 1_536, 32) == (1, 53)
    # on a GPU, 60,000 cell passes at any length: 60,000 / 3,000 = 20 -> 15; 60,000 / 32 steps
    assert default_schedule(3_000, 1_536, 64, cpu=False) == (15, None)
    assert default_schedule(68_000, 1_536, 32, cpu=False) == (1, 1_875)


def test_train_default_schedule_is_recorded(sim, monkeypatch):
    import omicformer.scgpt.model._perturbation_schedule as P

    monkeypatch.setattr(P, "BUDGET_LEN", 1)  # 40 genes a pass: 60,000 / 1,600 = 38 passes
    adata = sim.copy()
    ScGPTPerturbation.setup_anndata(adata)
    model = ScGPTPerturbation.load_pretrained("default", adata)
    model.train(batch_size=32, accelerator="cpu", enable_progress_bar=False)
    assert model.schedule_ == {"max_epochs": 1, "max_steps": 2}  # 38 / 32 -> 2 steps
    model.train(batch_size=32, max_steps=1, accelerator="cpu", enable_progress_bar=False)
    assert model.schedule_ == {"max_epochs": None, "max_steps": 1}  # as asked
    # the shrunk budget is for CPU training only ("auto": the CPU where there is no GPU)
    assert P._trains_on_cpu("cpu") and not P._trains_on_cpu("gpu")
    has_gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    assert P._trains_on_cpu("auto") is not has_gpu
    assert list(model.history["train_loss"].index) == [0, 1]  # the second run continues it


def test_validation_holds_out_whole_conditions(sim, sim_names):
    adata = sim.copy()
    ScGPTPerturbation.setup_anndata(adata)
    model = ScGPTPerturbation.load_pretrained("default", adata)
    model.train(max_epochs=1, batch_size=32, validation_size=0.3, accelerator="cpu", devices=1,
                enable_progress_bar=False, random_state=0)  # fmt: skip
    labels = adata.obs["condition"].astype(str).to_numpy()
    val = set(labels[model.validation_indices])
    train = set(labels[model.train_indices])
    assert len(val) == math.floor(0.3 * len(sim_names["conditions"])) and "ctrl" not in val
    assert "ctrl" in train and val.isdisjoint(train)
    assert val.isdisjoint(model.train_conditions_)
    assert set(model.train_conditions_) == train - {"ctrl"}
    assert val | set(model.train_conditions_) == set(sim_names["conditions"])
    for c in val:  # whole conditions
        assert set(np.flatnonzero(labels == c)) <= set(model.validation_indices)
    assert np.isfinite(np.asarray(model.history["validation_loss"]).ravel()).all()


def test_validation_holds_out_a_perturbation_in_either_order(sim):
    adata = sim.copy()
    labels = adata.obs["condition"].astype(str).to_numpy().copy()
    for c in set(labels) - {"ctrl"}:
        if not c.endswith("+ctrl"):  # half the cells of each pair written the other way round
            a, b = _genes_of(c)
            labels[np.flatnonzero(labels == c)[::2]] = f"{b}+{a}"
    adata.obs["condition"] = labels
    ScGPTPerturbation.setup_anndata(adata)
    model = ScGPTPerturbation.load_pretrained("default", adata)
    model.train(max_epochs=1, batch_size=64, validation_size=0.3, accelerator="cpu", devices=1,
                enable_progress_bar=False, random_state=0)  # fmt: skip
    trained = {frozenset(_genes_of(c)) for c in model.train_conditions_}
    held = {frozenset(_genes_of(c)) for c in labels[model.validation_indices]}
    assert held.isdisjoint(trained)


def test_setup_refuses_a_perturbed_gene_that_is_not_measured(sim, snapshot):
    adata = sim.copy()
    ctrl = np.flatnonzero(adata.obs["condition"].to_numpy() == "ctrl")[:3]
    adata.obs["condition"] = adata.obs["condition"].astype(str)
    adata.obs.iloc[ctrl, adata.obs.columns.get_loc("condition")] = "NOTAGENE+ctrl"
    snap = snapshot(adata)
    with pytest.raises(ValueError, match=r"1 condition\(s\) perturb genes that are not measured"):
        ScGPTPerturbation.setup_anndata(adata)
    snap.assert_unchanged(adata)
    # a typo is named with the symbol it resembles, as in a request (the condition alone before)
    gene = sim.var_names[0]
    adata.obs.iloc[ctrl, adata.obs.columns.get_loc("condition")] = f"{gene.lower()}+ctrl"
    with pytest.raises(
        ValueError, match=rf"the genes: '{gene.lower()}' \(did you mean '{gene}'\?\)"
    ):
        ScGPTPerturbation.setup_anndata(adata)
    # singles written 'GENE+ctrl' with another control label: 'ctrl' read as a gene
    relabelled = sim.copy()
    relabelled.obs["condition"] = relabelled.obs["condition"].astype(str).replace("ctrl", "control")
    with pytest.raises(ValueError, match=r"'ctrl' is read as a gene here.*pass control='ctrl'"):
        ScGPTPerturbation.setup_anndata(relabelled, control="control")


def test_setup_on_a_backed_view_says_what_works(sim, tmp_path):
    import anndata as ad

    sim.write_h5ad(tmp_path / "screen.h5ad")
    backed = ad.read_h5ad(tmp_path / "screen.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"ScGPTPerturbation.setup_anndata got a view of a backed"
                                         r".*to_memory\(\)"):  # fmt: skip
        ScGPTPerturbation.setup_anndata(backed[:100])
    backed.file.close()


def test_load_pretrained_with_too_few_vocabulary_genes_names_counts_and_fix(
    sim, default_vocab, snapshot
):
    adata = sim.copy()
    perturbed = {g for c in adata.obs["condition"].astype(str) for g in _genes_of(c)}
    # every measured gene the default vocabulary knows, except the perturbed ones, renamed
    adata.var_names = [g if g in perturbed or g not in default_vocab else f"NOVEL{i}"
                       for i, g in enumerate(adata.var_names)]  # fmt: skip
    known = sum(g in default_vocab for g in adata.var_names)
    assert known < 0.1 * adata.n_vars  # 40 genes: fewer than 4 known
    ScGPTPerturbation.setup_anndata(adata)
    snap = snapshot(adata)
    with pytest.raises(ValueError, match=rf"Only {known} of 40 genes .*need at least 4.*gene_key=.*"
                                         r"ScGPTPerturbation\(adata\)"):  # fmt: skip
        ScGPTPerturbation.load_pretrained("default", adata)
    snap.assert_unchanged(adata)
    model = ScGPTPerturbation(adata, d_model=16, n_layers=1, n_heads=2)  # the fix it names
    assert model.genes_ == list(adata.var_names)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),
        ({"max_epochs": 1.5}, "max_epochs=1.5 must be an integer"),
        ({"lr": -1.0}, "lr=-1.0 must be a number > 0"),
        ({"weight_decay": -0.1}, "weight_decay=-0.1 must be a number >= 0"),
        ({"n_de": -1, "de_weight": 1.0}, "n_de=-1 must be an integer >= 1"),
        ({"de_weight": -1.0}, "de_weight=-1.0 must be a number >= 0"),
        ({"early_stopping": True}, "early_stopping=True needs held-out conditions"),
    ],
)
def test_bad_train_arguments_are_refused_before_the_model_changes(sim, kwargs, match):
    adata = sim.copy()
    ScGPTPerturbation.setup_anndata(adata)
    model = ScGPTPerturbation(adata, d_model=16, n_layers=1, n_heads=2, dropout=0.1)
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        model.train(max_steps=1, accelerator="cpu", enable_progress_bar=False, **kwargs)
    assert model.module.config.dropout == 0.1  # train's default dropout=0.0 not applied
    assert not model.is_trained_ and not hasattr(model, "prior_effects_")
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_load_pretrained_refuses_a_max_len_below_2(sim):
    adata = sim.copy()
    ScGPTPerturbation.setup_anndata(adata)
    with pytest.raises(ValueError, match=r"max_len=0 must be >= 2"):  # was the default, 1536
        ScGPTPerturbation.load_pretrained("default", adata, max_len=0)


def _in_mouse_case(sim):
    """The screen with its genes (and conditions) spelled mouse-style: "ABI2" -> "Abi2"."""

    def mouse(name: str) -> str:
        return name if name == "ctrl" else name[0] + name[1:].lower()

    adata = sim.copy()
    adata.var_names = [mouse(g) for g in sim.var_names]
    adata.obs["condition"] = [
        "+".join(mouse(g) for g in c.split("+")) for c in sim.obs["condition"].astype(str)
    ]
    return adata


@pytest.mark.filterwarnings("ignore:.*were training data, not unseen")
def test_mouse_style_symbols_keep_their_pretrained_embeddings(sim, default_vocab, tmp_path):
    # symbols that match the vocabulary only ignoring case are read as every scGPT model
    # reads them: the matched genes keep their pretrained rows, only the others are new
    adata = _in_mouse_case(sim)
    ScGPTPerturbation.setup_anndata(adata)
    with pytest.warns(UserWarning, match="case is ignored"):
        model = ScGPTPerturbation.load_pretrained("default", adata)
    matched = [g for g in adata.var_names if g.upper() in default_vocab]
    assert matched  # the simulation's genes include some of the default vocabulary's
    assert model.pretrained_report_["new_genes"] == [
        g for g in adata.var_names if g.upper() not in default_vocab
    ]
    ids = dict(zip(model.genes_, model._gene_token_ids().tolist(), strict=True))
    assert [ids[g] for g in matched] == [default_vocab[g.upper()] for g in matched]
    assert len(set(ids.values())) == adata.n_vars and min(ids.values()) >= 0
    # trained, saved and loaded, it reads the genes the same way
    model.train(max_epochs=1, batch_size=32, accelerator="cpu", enable_progress_bar=False)
    model.save(tmp_path / "m")
    loaded = ScGPTPerturbation.load(tmp_path / "m", adata)
    np.testing.assert_array_equal(loaded._gene_token_ids(), model._gene_token_ids())
    request = [_genes_of(c)[0] for c in adata.obs["condition"].unique() if c != "ctrl"][:1]
    a = model.predict(request, progress=False).X
    b = loaded.predict(request, progress=False).X
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)


def test_genes_differing_only_in_case_get_one_token_each(sim, default_vocab):
    # "Anp32b" and "ANP32B" both read as the token ANP32B: two measured genes with one embedding
    adata = _in_mouse_case(sim)
    perturbed = {g for c in adata.obs["condition"].astype(str) for g in c.split("+")}
    matched = [g for g in adata.var_names if g.upper() in default_vocab and g not in perturbed]
    spare = [g for g in adata.var_names if g.upper() not in default_vocab and g not in perturbed]
    names = list(adata.var_names)
    names[names.index(spare[0])] = matched[0].upper()  # the token's own spelling beside "Anp32b"
    names[names.index(spare[1])] = matched[1].lower()  # two spellings, neither the token's
    adata.var_names = names
    ScGPTPerturbation.setup_anndata(adata)
    model = ScGPTPerturbation.load_pretrained("default", adata)
    ids = dict(zip(model.genes_, model._gene_token_ids().tolist(), strict=True))
    assert len(set(ids.values())) == adata.n_vars and min(ids.values()) >= 0
    assert ids[matched[0].upper()] == default_vocab[matched[0].upper()]  # as written: kept
    new = model.pretrained_report_["new_genes"]
    assert {matched[0], matched[1], matched[1].lower()} <= set(new)
    assert matched[0].upper() not in new
