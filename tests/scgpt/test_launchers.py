"""Several processes: who Lightning would start, and what is refused before it does.

Lightning's ``ddp_spawn``/``ddp_fork``/``ddp_notebook`` run in processes started from the
calling one and send back only rank 0's weights: training under them lost its history (and
``ddp_spawn`` failed to start), embedding returned ``None``. They are refused up front.
"""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from omicformer._core._distributed import world_size_of
from omicformer.scgpt.model import ScGPT
from omicformer.scgpt.model._training import capped_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("devices", "num_nodes", "strategy", "expected"),
    [
        (1, 1, "auto", 1),
        (2, 1, "ddp", 2),
        (3, 1, "ddp_spawn", 3),
        (2, 2, "ddp", 4),
        ("1", 1, "auto", 1),
    ],
)
def test_world_size_is_lightnings(devices, num_nodes, strategy, expected):
    assert world_size_of("cpu", devices, num_nodes, strategy) == expected


def test_world_size_leaves_a_strategy_object_and_bad_settings_to_the_training():
    from lightning.pytorch.strategies import DDPStrategy

    strategy = DDPStrategy()
    assert world_size_of("cpu", 2, 1, strategy) == 2
    pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False)  # still unused
    if not torch.cuda.is_available():  # Lightning's error; training reports it more clearly
        assert world_size_of("gpu", "auto", 1, "auto") == 1


def test_a_default_schedule_shares_its_cap_among_the_processes():
    # 6,000 cells, minibatches of 32, 3 epochs, a cap of 12,000 cell passes:
    # one process: 375 steps; 188 minibatches an epoch, 3 x 188 > 375: epochs of 375 // 3 = 125
    # two: ceil(12000 / 64) = 188 steps; each trains ceil(188 / 2) = 94 an epoch, 3 x 94 > 188:
    # epochs of 188 // 3 = 62 (62 x 3 x 64 = 11,904 cell passes, not 3 x 6,000 = 18,000)
    kw = {"accelerator": "cpu", "num_nodes": 1, "strategy": "ddp"}
    one, two = {}, {}
    assert capped_schedule(6000, 32, 3, 12_000, one, devices=1, **kw) == 375
    assert one == {"limit_train_batches": 125}
    assert capped_schedule(6000, 32, 3, 12_000, two, devices=2, **kw) == 188
    assert two == {"limit_train_batches": 62}
    small = {}  # 300 cells, 2 processes: 10 minibatches, 5 each, 3 epochs = 15 steps < 188
    assert capped_schedule(300, 32, 3, 12_000, small, devices=2, **kw) == 188 and small == {}


@pytest.fixture
def tiny(model_cells):
    a = model_cells()
    ScGPT.setup_anndata(a, layer="counts")
    return ScGPT(a, d_model=32, n_layers=1, n_heads=2, random_state=0)


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork", "ddp_notebook"])
def test_training_in_started_processes_is_refused_before_the_model_changes(tiny, strategy):
    before = {k: v.clone() for k, v in tiny.module.state_dict().items()}
    with pytest.raises(ValueError, match=rf"strategy='{strategy}' runs DDP in processes started "
                       r"from this one.*not the training history.*strategy='ddp'"):  # fmt: skip
        tiny.train(max_epochs=1, batch_size=8, accelerator="cpu", devices=2, strategy=strategy,
                   enable_progress_bar=False)  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in tiny.module.state_dict().items())
    assert not tiny.is_trained and not tiny.history


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_embedding_in_started_processes_is_refused_and_leaves_no_file(tiny, strategy, tmp_path):
    out = tmp_path / "z.npy"
    with pytest.raises(ValueError, match=r"processes started from this one.*not the embeddings"):
        tiny.get_latent_representation(accelerator="cpu", devices=2, strategy=strategy,
                                       out_file=out, progress=False)  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    z = tiny.get_latent_representation(accelerator="cpu", devices=1, progress=False)
    assert z.shape == (100, 32) and np.isfinite(z).all()
