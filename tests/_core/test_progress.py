"""Training progress bars: on stderr, as the tqdm bars, so that stdout keeps the results."""

import numpy as np
import pytest


@pytest.mark.parametrize("bar", [True, False])
def test_the_training_bar_is_drawn_on_stderr(capsys, bar):
    # Lightning's RichProgressBar drew on stdout, mixing bar frames with a command's result
    from omicformer.dnabert.model import DNABert

    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 40)) for _ in range(8)]
    model = DNABert(k=3, n_layers=1, d_model=16, n_heads=2, max_len=48)
    model.finetune(seqs, [0, 1] * 4, max_steps=2, batch_size=4, accelerator="cpu",
                   validation_size=0.0, enable_progress_bar=bar)  # fmt: skip
    out, err = capsys.readouterr()
    assert "Epoch" not in out
    assert ("Epoch" in err) is bar
