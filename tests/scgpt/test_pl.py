import matplotlib

matplotlib.use("Agg")
import pandas as pd
import pytest

from omicformer.scgpt import pl


def test_loss_curve_from_history():
    hist = {
        "train_loss": pd.DataFrame({"train_loss": [3.0, 2.0, 1.5]}),
        "validation_loss": pd.DataFrame({"validation_loss": [3.1, 2.2, 1.9]}),
    }
    ax = pl.loss_curve(hist, show=False)
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_ydata()) == [3.0, 2.0, 1.5]
    with pytest.raises(ValueError, match="No loss history"):
        pl.loss_curve({}, show=False)
    with pytest.raises(KeyError, match="train_loss_ecs"):
        pl.loss_curve(hist, keys=("train_loss_ecs",), show=False)
