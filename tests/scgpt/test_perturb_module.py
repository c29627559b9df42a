"""The perturbation module, its collator and its training plan.

The module is checked against a reference forward pass written here from the official
``TransformerGenerator`` structure; the collator and the plan against hand-built batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from omicformer.scgpt.module import ScGPTConfig, TransformerModel
from omicformer.scgpt.train._perturb import (
    PerturbationCollator,
    PerturbationDataset,
    PerturbationTrainingPlan,
    training_screen,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# =============================================================================================
# module: the official TransformerGenerator structure, written independently
# =============================================================================================
class _RefGenerator(nn.Module):
    """Official ``TransformerGenerator`` layout with torch layers: gene embedding + LayerNorm,
    continuous value encoder, ``pert_encoder`` embedding, all summed; ``nn.TransformerEncoder``;
    affine decoder ``coeff(h) * x + bias(h)`` from two 3-layer LeakyReLU heads."""

    def __init__(self, ntoken, d, nhead, d_hid, nlayers, pad_id):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.embedding = nn.Embedding(ntoken, d, padding_idx=pad_id)
        self.encoder.enc_norm = nn.LayerNorm(d)
        self.value_encoder = nn.Module()
        self.value_encoder.linear1 = nn.Linear(1, d)
        self.value_encoder.linear2 = nn.Linear(d, d)
        self.value_encoder.norm = nn.LayerNorm(d)
        self.pert_encoder = nn.Embedding(3, d, padding_idx=2)
        layer = nn.TransformerEncoderLayer(d, nhead, d_hid, 0.0, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.decoder = nn.Module()
        for name in ("coeff_decoder", "bias_decoder"):
            head = nn.Module()
            head.fc = nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d),
                                    nn.LeakyReLU(), nn.Linear(d, 1))  # fmt: skip
            setattr(self.decoder, name, head)

    def forward(self, src, values, flags, pad_mask, with_pert=True):
        gene = self.encoder.enc_norm(self.encoder.embedding(src))
        v = self.value_encoder
        value = v.norm(v.linear2(torch.relu(v.linear1(values.unsqueeze(-1).clamp(max=512)))))
        total = gene + value
        if with_pert:
            total = total + self.pert_encoder(flags)
        h = self.transformer_encoder(total, src_key_padding_mask=pad_mask)
        coeff = self.decoder.coeff_decoder.fc(h).squeeze(-1)
        bias = self.decoder.bias_decoder.fc(h).squeeze(-1)
        return coeff * values + bias


NTOKEN, PAD, D = 14, 0, 16


def _module(seed=0) -> TransformerModel:
    config = ScGPTConfig(ntoken=NTOKEN, pad_token_id=PAD, d_model=D, nhead=2, d_hid=24,
                         nlayers=2, dropout=0.0, do_mvc=False, perturbation=True)  # fmt: skip
    torch.manual_seed(seed)
    module = TransformerModel(config)
    with torch.no_grad():  # non-trivial LayerNorm/bias values, so wrong wiring shows
        for name, p in module.named_parameters():
            if name != "pert_encoder.weight":
                p.add_(0.1 * torch.randn_like(p))
        module.pert_encoder.weight[:2] = torch.randn(2, D)
    return module.eval()


def _reference(module: TransformerModel) -> _RefGenerator:
    ref = _RefGenerator(NTOKEN, D, 2, 24, 2, PAD)
    state = module.state_dict()
    assert set(ref.state_dict()) <= set(state)
    ref.load_state_dict({k: state[k] for k in ref.state_dict()})
    return ref.eval()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, NTOKEN, (3, 7), generator=g)
    values = torch.rand(3, 7, generator=g) * 4
    values[0, :3] = 0.0
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[2, 5:] = True
    src[pad] = PAD
    flags = torch.tensor([[0, 1, 0, 0, 2, 0, 0], [0, 0, 0, 1, 1, 0, 0], [2, 2, 0, 0, 1, 0, 0]])
    return src, values, pad, flags


def test_perturbation_forward_equals_official_structure():
    module = _module()
    ref = _reference(module)
    src, values, pad, flags = _inputs()
    with torch.no_grad():
        out = module(src, values, pad, pert_flags=flags)["mlm_output"]
        expected = ref(src, values, flags, pad)
    assert out.shape == (3, 7)
    torch.testing.assert_close(out[~pad], expected[~pad], rtol=1e-4, atol=1e-5)
    assert out[~pad].std() > 0.05  # not a degenerate comparison


def test_perturbed_flag_changes_the_prediction():
    module = _module()
    src, values, _, _ = _inputs()
    zeros = torch.zeros_like(src)
    one = zeros.clone()
    one[:, 3] = 1
    with torch.no_grad():
        a = module(src, values, None, pert_flags=zeros)["mlm_output"]
        b = module(src, values, None, pert_flags=one)["mlm_output"]
    assert (a[:, 3] - b[:, 3]).abs().min() > 1e-4
    # the effect also reaches the other genes through attention
    assert (a[:, [0, 1, 2, 4]] - b[:, [0, 1, 2, 4]]).abs().max() > 1e-4


def test_pad_flag_embeds_to_zero_and_gets_no_gradient():
    module = _module()
    ref = _reference(module)
    src, values, _, _ = _inputs()
    pad_flags = torch.full_like(src, 2)
    assert torch.count_nonzero(module.pert_encoder.weight[2]) == 0
    with torch.no_grad():
        out = module(src, values, None, pert_flags=pad_flags)["mlm_output"]
        no_pert = ref(src, values, None, None, with_pert=False)
        no_flags = module(src, values, None)["mlm_output"]
    # flag = pad is exactly "no perturbation term"
    torch.testing.assert_close(out, no_pert, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, no_flags, rtol=0, atol=1e-6)

    module.train()
    _, _, _, flags = _inputs()
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    before = module.pert_encoder.weight.detach().clone()
    module(src, values, None, pert_flags=flags)["mlm_output"].pow(2).sum().backward()
    grad = module.pert_encoder.weight.grad
    assert torch.count_nonzero(grad[2]) == 0
    assert torch.count_nonzero(grad[0]) > 0 and torch.count_nonzero(grad[1]) > 0
    opt.step()
    after = module.pert_encoder.weight.detach()
    assert torch.count_nonzero(after[2]) == 0
    assert not torch.equal(after[:2], before[:2])


def test_pert_flags_need_a_perturbation_module():
    config = ScGPTConfig(ntoken=NTOKEN, pad_token_id=PAD, d_model=D, nhead=2, nlayers=1)
    module = TransformerModel(config).eval()
    src, values, _, flags = _inputs()
    with pytest.raises(ValueError, match="perturbation=True"):
        module(src, values, None, pert_flags=flags)
    assert not hasattr(module, "pert_encoder")


def test_training_plan_loss_is_mse_plus_weighted_de_mse():
    module = _module()
    src, values, _, flags = _inputs()
    target = torch.rand(3, 7, generator=torch.Generator().manual_seed(5))
    de = torch.zeros(3, 7, dtype=torch.bool)
    de[0, [2, 5]] = True
    de[1, 6] = True
    batch = {"genes": src, "values": values, "pert_flags": flags, "target": target, "de": de}
    plan = PerturbationTrainingPlan(module, de_weight=0.5)
    with torch.no_grad():
        parts = plan.losses(batch)
        pred = module(src, values, None, pert_flags=flags)["mlm_output"].double().numpy()
    sq = (pred - target.double().numpy()) ** 2
    mse = sq.mean()
    de_mse = (sq[0, 2] + sq[0, 5] + sq[1, 6]) / 3
    assert parts["loss_mse"].item() == pytest.approx(mse, rel=1e-5)
    assert parts["loss_de"].item() == pytest.approx(de_mse, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(mse + 0.5 * de_mse, rel=1e-5)
    with pytest.raises(ValueError, match="de_weight"):
        PerturbationTrainingPlan(_module(), de_weight=-1.0)
    plain = TransformerModel(ScGPTConfig(ntoken=NTOKEN, pad_token_id=PAD, d_model=D, nhead=2,
                                         nlayers=1))  # fmt: skip
    with pytest.raises(ValueError, match="perturbation=True"):
        PerturbationTrainingPlan(plain)


# =============================================================================================
# collator
# =============================================================================================
N_COL = 8
GENE_IDS = np.arange(100, 100 + N_COL)
CODES = np.array([0, 1, 2, 0, 1, 2])
PERTURBED = [np.array([], dtype=np.int64), np.array([5]), np.array([6, 7])]
DE_COLS = [np.array([], dtype=np.int64), np.array([0, 1]), np.array([2])]
TARGETS = np.array([[10 * i + j + 1 for j in range(N_COL)] for i in range(6)], dtype=np.float32)
POOL = np.array([[1000 + 10 * k + j for j in range(N_COL)] for k in range(3)], dtype=np.float32)


def _collate(max_len=N_COL, seed=7, items=range(6)):
    ds = PerturbationDataset(sp.csr_matrix(TARGETS), CODES, control_code=0)
    collator = PerturbationCollator(ds, sp.csr_matrix(POOL), GENE_IDS, PERTURBED, DE_COLS,
                                    max_len=max_len, seed=seed)  # fmt: skip
    return collator([ds[i] for i in items]), [int(i) for i in items]


def _pool_row(values: np.ndarray, cols: np.ndarray) -> int:
    hits = [k for k in range(len(POOL)) if np.array_equal(values, POOL[k, cols])]
    assert len(hits) == 1, values
    return hits[0]


def test_collator_pairs_controls_with_themselves_and_perturbed_cells_with_controls():
    batch, rows = _collate()
    assert set(batch) == {"genes", "values", "pert_flags", "target", "de"}
    cols = np.arange(N_COL)
    for b, row in enumerate(rows):
        code = CODES[row]
        np.testing.assert_array_equal(batch["genes"][b].numpy(), GENE_IDS)
        np.testing.assert_array_equal(batch["target"][b].numpy(), TARGETS[row])
        if code == 0:
            np.testing.assert_array_equal(batch["values"][b].numpy(), TARGETS[row])
        else:
            _pool_row(batch["values"][b].numpy(), cols)  # a control cell of the pool
        flags = np.zeros(N_COL, dtype=np.int64)
        flags[PERTURBED[code]] = 1
        np.testing.assert_array_equal(batch["pert_flags"][b].numpy(), flags)
        de = np.zeros(N_COL, dtype=bool)
        de[DE_COLS[code]] = True
        np.testing.assert_array_equal(batch["de"][b].numpy(), de)
    assert batch["pert_flags"].dtype == torch.int64 and batch["values"].dtype == torch.float32


@pytest.mark.parametrize(("items", "must"), [(range(6), [5, 6, 7]), ([0, 1, 3], [5])])
def test_collator_subset_keeps_perturbed_genes_and_has_max_len(items, must):
    batch, rows = _collate(max_len=4, items=items)
    genes = batch["genes"].numpy()
    assert genes.shape == (len(rows), 4)
    assert (genes == genes[0]).all()
    cols = genes[0] - 100
    assert len(set(cols)) == 4 and set(must) <= set(cols)
    for b, row in enumerate(rows):
        code = CODES[row]
        np.testing.assert_array_equal(batch["target"][b].numpy(), TARGETS[row, cols])
        flags = np.isin(cols, PERTURBED[code]).astype(np.int64)
        np.testing.assert_array_equal(batch["pert_flags"][b].numpy(), flags)
        np.testing.assert_array_equal(batch["de"][b].numpy(), np.isin(cols, DE_COLS[code]))
        if code == 0:
            np.testing.assert_array_equal(batch["values"][b].numpy(), TARGETS[row, cols])
        else:
            _pool_row(batch["values"][b].numpy(), cols)


def test_collator_hands_the_prior_and_centres_inputs_and_targets():
    priors = np.arange(3 * N_COL, dtype=np.float32).reshape(3, N_COL) / 10
    centre = np.linspace(1, 2, N_COL).astype(np.float32)
    ds = PerturbationDataset(sp.csr_matrix(TARGETS), CODES, control_code=0)
    collator = PerturbationCollator(ds, sp.csr_matrix(POOL), GENE_IDS, PERTURBED, DE_COLS,
                                    priors=priors, center=centre, max_len=4, seed=3)  # fmt: skip
    batch = collator([ds[i] for i in range(6)])
    cols = batch["genes"][0].numpy() - 100
    for b in range(6):
        code = CODES[b]
        np.testing.assert_allclose(batch["pert_prior"][b].numpy(), priors[code, cols])
        np.testing.assert_allclose(batch["target"][b].numpy(), TARGETS[b, cols] - centre[cols])
        if code == 0:
            np.testing.assert_allclose(batch["values"][b].numpy(), TARGETS[b, cols] - centre[cols])
        else:
            _pool_row(batch["values"][b].numpy() + centre[cols], cols)


def test_covariance_prior_is_the_gaussian_propagation_written_out():
    from omicformer.scgpt.train import CovariancePrior

    rng = np.random.default_rng(0)
    ctrl = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + 3
    observed = {3: np.array([0.1, -0.2, 0.3, -0.4, 0.5])}
    prior = CovariancePrior(sp.csr_matrix(ctrl), {1: -1.5}, -0.7, ridge=0.05, observed=observed)
    c = np.cov(ctrl.T)  # written out: slope_g = C[:, g] / (C[g, g] + 0.05 * median variance)
    r = 0.05 * np.median(np.diag(c))
    one = -1.5 * c[:, 1] / (c[1, 1] + r)
    one[1] = -1.5
    np.testing.assert_allclose(prior([1]), one, rtol=1e-5)
    other = -0.7 * c[:, 2] / (c[2, 2] + r)  # no single measured: the typical effect
    other[2] = -0.7
    np.testing.assert_allclose(prior([2]), other, rtol=1e-5)
    # combinations: measured singles' observed changes replace their propagation, then add up
    np.testing.assert_allclose(prior([2, 3]), other + observed[3], rtol=1e-5)
    np.testing.assert_allclose(prior([1, 2]), one + other, rtol=1e-5)
    # with the perturbations' shared mean change m: m + (e_g - m_g) * slope_g, e_g on g itself
    m = np.array([0.2, -0.1, 0.05, 0.0, 0.3])
    shared = CovariancePrior(sp.csr_matrix(ctrl), {1: -1.5}, -0.7, ridge=0.05,
                             observed=observed, shared=m)  # fmt: skip
    one_m = m + (-1.5 - -0.1) * c[:, 1] / (c[1, 1] + r)
    one_m[1] = -1.5
    other_m = m + (-0.7 - 0.05) * c[:, 2] / (c[2, 2] + r)
    other_m[2] = -0.7
    np.testing.assert_allclose(shared([1]), one_m, rtol=1e-5)
    np.testing.assert_allclose(shared([2, 3]), other_m + observed[3], rtol=1e-5)
    np.testing.assert_allclose(shared([1, 2]), one_m + other_m, rtol=1e-5)


def test_collator_is_reproducible():
    a, _ = _collate(max_len=4, seed=11)
    b, _ = _collate(max_len=4, seed=11)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # training collators (seed=None) follow torch's global generator
    torch.manual_seed(123)
    c, _ = _collate(max_len=4, seed=None)
    torch.manual_seed(123)
    d, _ = _collate(max_len=4, seed=None)
    for k in c:
        torch.testing.assert_close(c[k], d[k], rtol=0, atol=0)


def test_collator_and_dataset_checks():
    ds = PerturbationDataset(sp.csr_matrix(TARGETS), CODES, control_code=0)
    np.testing.assert_array_equal(ds.control_rows, [0, 3])
    assert len(ds) == 6 and ds[4] == (4, 1)
    with pytest.raises(ValueError, match="condition codes"):
        PerturbationDataset(sp.csr_matrix(TARGETS), CODES[:5], control_code=0)
    with pytest.raises(ValueError, match="No control cells"):
        PerturbationCollator(ds, sp.csr_matrix((0, N_COL)), GENE_IDS, PERTURBED, DE_COLS,
                             max_len=4)  # fmt: skip


def test_training_screen_by_hand():
    # genes A, B, C, D; two control cells with mean [2, 2, 2, 2]
    X = sp.csr_matrix(np.array([
        [1, 2, 3, 2],  # ctrl
        [0, 2, 6, 2],  # A+ctrl: delta [-2, 0, 4, 0] -> DE (A excluded): C, B
        [3, 2, 1, 2],  # ctrl
        [0, 0, 2, 5],  # B+A, one perturbation with A+B: its cells pooled, mean [0, 0, 2, 6]
        [0, 0, 2, 7],  # A+B:    delta [-2, -2, 0, 4] -> DE: D, C
        [2, 1, 2, 2],  # ctrl+B: delta [0, -1, 0, 0] -> DE: A, C (ties in gene order)
        [2, 1, 2, 2],  # B+ctrl, the same perturbation as ctrl+B
    ], dtype=np.float32))  # fmt: skip
    labels = np.array(["ctrl", "A+ctrl", "ctrl", "B+A", "A+B", "ctrl+B", "B+ctrl"])
    genes = ["A", "B", "C", "D"]

    def cols(g):
        return np.array([genes.index(x) for x in g], dtype=np.int64)

    s = training_screen(X, labels, "ctrl", cols, genes, n_de=2, validation_size=0.0,
                        random_state=0)  # fmt: skip
    # control, then one name per perturbation (its first spelling), sorted
    assert s.conditions == ["ctrl", "A+B", "A+ctrl", "B+ctrl"]
    np.testing.assert_array_equal(s.codes, [0, 2, 0, 1, 1, 3, 3])
    assert [p.tolist() for p in s.perturbed] == [[], [0, 1], [0], [1]]
    assert [d.tolist() for d in s.de] == [[], [3, 2], [2, 1], [0, 2]]
    np.testing.assert_allclose(s.deltas[1], [-2, -2, 0, 4])
    np.testing.assert_allclose(s.trained_mean_change(), [-4 / 3, -1, 4 / 3, 4 / 3])
    np.testing.assert_allclose(s.ctrl_mean, [2, 2, 2, 2])
    assert s.held.size == 0 and not s.val_mask.any()
    singles = s.trained_singles()
    assert sorted(singles) == [0, 1]
    np.testing.assert_allclose(singles[0], [-2, 0, 4, 0])
    np.testing.assert_allclose(singles[1], [0, -1, 0, 0])
    # validation holds out whole perturbations: "A+B" and "B+A" together or not at all
    for seed in range(6):
        s = training_screen(X, labels, "ctrl", cols, genes, n_de=2, validation_size=0.5,
                            random_state=seed)  # fmt: skip
        held = {s.conditions[k] for k in s.held}
        assert held and "ctrl" not in held
        spelt = (
            held
            | ({"B+A"} if "A+B" in held else set())
            | ({"ctrl+B"} if "B+ctrl" in held else set())
        )
        np.testing.assert_array_equal(s.val_mask, np.isin(labels, sorted(spelt)))
        assert not {s.conditions[k] for k in s.held} & {
            genes[c] + "+ctrl" for c in s.trained_singles()
        }  # a held-out single is no training single


# =============================================================================================
# mean_perturbed_expression: the regression adjustment, on a module written for the test
# =============================================================================================
class _SquareModule(nn.Module):
    """Predicts each gene as its input value squared, plus 1 on the perturbed genes."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"nhead": 1})()

    def forward(self, ids, values, mask, *, pert_flags, pert_prior=None):
        return {"mlm_output": values**2 + pert_flags.float()}


def test_mean_perturbed_expression_regression_adjustment_by_hand():
    from omicformer.scgpt.train._perturb_predict import mean_perturbed_expression

    # three control cells of two genes; gene 0 is perturbed
    controls = torch.tensor([[0.0, 3.0], [1.0, 3.0], [2.0, 3.0]])
    kw = {"max_len": None, "progress": False}
    plain = mean_perturbed_expression(_SquareModule(), [5, 6], controls, [np.array([0])], **kw)
    # gene 0: predictions 1, 2, 5 (mean 8/3); gene 1: 9 in every cell
    np.testing.assert_allclose(plain, [[8 / 3, 9.0]])
    adjusted = mean_perturbed_expression(
        _SquareModule(), [5, 6], controls, [np.array([0])], control_mean=np.array([0.5, 2.0]),
        **kw,
    )  # fmt: skip
    # gene 0: x = 0, 1, 2 (mean 1, variance 2/3); prediction p = x**2 + 1, cov(p, x) = 4/3,
    # slope 2; the sample's mean x lies 1 - 0.5 = 0.5 above the control mean: 8/3 - 2 * 0.5.
    # gene 1: x does not vary in the sample, slope 0: 9 as it is
    np.testing.assert_allclose(adjusted, [[8 / 3 - 1.0, 9.0]])


def test_mean_perturbed_expression_adjusted_mean_of_a_linear_module_is_exact():
    """A module passing b * x through predicts from a sample what it would from every cell."""
    from omicformer.scgpt.train._perturb_predict import mean_perturbed_expression

    class Linear(_SquareModule):
        def forward(self, ids, values, mask, *, pert_flags, pert_prior=None):
            return {"mlm_output": 0.5 * values + 2.0 + pert_flags.float()}

    rng = np.random.default_rng(0)
    cells = rng.normal(size=(200, 7)).astype(np.float32)
    every = cells.astype(np.float64).mean(0)
    sample = torch.as_tensor(cells[rng.choice(200, 12, replace=False)])
    cols = [np.array([3]), np.array([1, 5])]
    got = mean_perturbed_expression(Linear(), np.arange(7), sample, cols, max_len=4,
                                    control_mean=every, progress=False)  # fmt: skip
    for k, c in enumerate(cols):
        expected = 0.5 * every + 2.0
        expected[c] += 1.0
        np.testing.assert_allclose(got[k], expected, atol=1e-6)
    plain = mean_perturbed_expression(Linear(), np.arange(7), sample, cols, max_len=4,
                                      progress=False)  # fmt: skip
    assert np.abs(plain - got).max() > 0.01  # the sample's own mean is not every cell's
