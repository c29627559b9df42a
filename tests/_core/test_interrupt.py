"""Ctrl-C during training, as the caller meets it."""

import numpy as np
import pytest


def test_ctrl_c_in_training_is_a_keyboard_interrupt():
    # Lightning ends a fit stopped by Ctrl-C with sys.exit(1): scripts' and notebooks'
    # KeyboardInterrupt handlers did not see it, and IPython reported "SystemExit: 1"
    import signal

    import lightning.pytorch as pl

    from omicformer.dnabert.model import DNABert

    class CtrlC(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            raise KeyboardInterrupt

    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 40)) for _ in range(8)]
    model = DNABert(k=3, n_layers=1, d_model=16, n_heads=2, max_len=48)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        model.finetune(seqs, [0, 1] * 4, max_steps=2, batch_size=4, accelerator="cpu",
                       enable_progress_bar=False, callbacks=[CtrlC()])  # fmt: skip
    assert signal.getsignal(signal.SIGINT) is handler  # a second Ctrl-C still interrupts


def test_a_callbacks_own_sys_exit_keeps_its_code():
    # Lightning marks any exception out of fit as an interruption: only Ctrl-C is one
    import lightning.pytorch as pl

    from omicformer.dnabert.model import DNABert

    class Exit(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            raise SystemExit(3)

    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 40)) for _ in range(8)]
    model = DNABert(k=3, n_layers=1, d_model=16, n_heads=2, max_len=48)
    caught: BaseException | None = None
    try:  # a KeyboardInterrupt escaping pytest.raises would stop the test session
        model.finetune(seqs, [0, 1] * 4, max_steps=2, batch_size=4, accelerator="cpu",
                       enable_progress_bar=False, callbacks=[Exit()])  # fmt: skip
    except BaseException as err:
        caught = err
    assert isinstance(caught, SystemExit) and caught.code == 3, repr(caught)
