"""The training callbacks (``_core._callbacks``): durations, long CPU runs, history."""

import pandas as pd

from omicformer._core._callbacks import (
    extend_history,
    format_duration,
    history_from_rows,
    long_run_message,
)


def test_format_duration_hand_examples():
    assert format_duration(40.2) == "40 s"
    assert format_duration(1500) == "25 min"
    assert format_duration(7500) == "2 h 05 min"
    assert format_duration(3599) == "1 h 00 min"  # 59.98 minutes round to an hour


def test_long_run_message_says_how_many_trainings_follow():
    one = long_run_message(30.0, 40, early_stopping=False, runs_after=1)
    assert one.startswith("Training will take about 20 min more on the CPU (30.00 s per ")
    assert "Then 1 more training like it follows (the members of an ensemble)." in one
    two = long_run_message(30.0, 40, early_stopping=False, runs_after=2)
    assert "Then 2 more trainings like it follow" in two
    assert "Then" not in long_run_message(30.0, 40, early_stopping=False)


def _rows(history):
    return {
        k: list(zip(f.index.tolist(), f.iloc[:, 0].tolist(), strict=True))
        for k, f in history.items()
    }


def test_a_continued_run_numbers_sparse_and_new_curves_on_from_the_last_epoch():
    # two runs of 3 epochs with validation every other epoch (epoch 1 of each) and 2 steps each
    run = {"train_loss": [(0, 9.0), (1, 8.0), (2, 7.0)], "validation_loss": [(1, 5.0)],
           "train_loss_step": [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0), (6, 1.0)]}  # fmt: skip
    second = {**run, "train_loss_ecs": [(2, 3.0)]}  # a curve the first run did not record
    history = extend_history(
        extend_history(None, history_from_rows(run)), history_from_rows(second)
    )
    rows = _rows(history)
    assert [i for i, _ in rows["train_loss"]] == [0, 1, 2, 3, 4, 5]
    assert rows["validation_loss"] == [(1, 5.0), (4, 5.0)]  # epoch 1 of the second run is 4
    assert rows["train_loss_ecs"] == [(5, 3.0)]
    assert [i for i, _ in rows["train_loss_step"]] == list(range(1, 13))
    assert history["validation_loss"].index.name == "epoch"


def test_a_run_resumed_by_the_same_model_replaces_what_it_recorded_after_the_checkpoint():
    # the model ran epochs 0-2 after an earlier run of 2 epochs, then was interrupted; the
    # checkpoint holds epochs 0-1 of that run, the resumed run re-runs epoch 2 and adds 3
    earlier = history_from_rows({"train_loss": [(0, 20.0), (1, 19.0)]})
    interrupted = history_from_rows({"train_loss": [(0, 9.0), (1, 8.0), (2, 7.5)],
                                     "validation_loss": [(1, 5.0), (2, 4.5)]})  # fmt: skip
    history = extend_history(earlier, interrupted)
    resumed = history_from_rows({"train_loss": [(0, 9.0), (1, 8.0), (2, 7.0), (3, 6.0)],
                                 "validation_loss": [(1, 5.0), (2, 4.0), (3, 3.0)]})  # fmt: skip
    resumed["train_loss"].attrs["restored_rows"] = 2
    resumed["validation_loss"].attrs["restored_rows"] = 1
    rows = _rows(extend_history(history, resumed))
    assert rows["train_loss"] == [(0, 20.0), (1, 19.0), (2, 9.0), (3, 8.0), (4, 7.0), (5, 6.0)]
    assert rows["validation_loss"] == [(3, 5.0), (4, 4.0), (5, 3.0)]
    # resumed into a model that never ran that part: every row is appended
    fresh = _rows(extend_history(earlier, resumed))
    assert [i for i, _ in fresh["train_loss"]] == [0, 1, 2, 3, 4, 5]
    assert [i for i, _ in fresh["validation_loss"]] == [3, 4, 5]


def test_history_prefixes_number_each_stage_on_its_own():
    mlm = history_from_rows({"train_loss": [(0, 3.0), (1, 2.0)], "validation_loss": [(1, 2.5)]})
    history = extend_history(None, mlm, prefix="mlm_")
    assert sorted(history) == ["mlm_train_loss", "mlm_validation_loss"]
    assert history["mlm_validation_loss"].columns.tolist() == ["mlm_validation_loss"]
    assert pd.Index([1], name="epoch").equals(history["mlm_validation_loss"].index)
    # fine-tuning is a stage of its own: its epochs start at 0; a second pretraining continues
    history = extend_history(
        history, history_from_rows({"train_loss": [(0, 1.0)]}), prefix="finetune_"
    )
    assert history["finetune_train_loss"].index.tolist() == [0]
    history = extend_history(history, mlm, prefix="mlm_")
    assert history["mlm_train_loss"].index.tolist() == [0, 1, 2, 3]
    assert history["mlm_validation_loss"].index.tolist() == [1, 3]


def test_a_resume_matched_by_one_curve_only_is_not_taken_for_this_models_run():
    # a saved model's fine-tuning ran 3 epochs; a run of another process was resumed into it:
    # its restored accuracy (0.75) repeats one of the model's by chance, its loss does not
    history = history_from_rows({"train_loss": [(0, 0.69), (1, 0.61), (2, 0.52)],
                                 "validation_accuracy": [(0, 0.5), (1, 0.5), (2, 0.75)]})  # fmt: skip
    run = history_from_rows({"train_loss": [(0, 0.45), (1, 0.40)],
                             "validation_accuracy": [(0, 0.75), (1, 0.8)]})  # fmt: skip
    for frame in run.values():
        frame.attrs["restored_rows"] = 1
    rows = _rows(extend_history(history, run))
    assert rows["train_loss"] == [(0, 0.69), (1, 0.61), (2, 0.52), (3, 0.45), (4, 0.40)]
    assert [i for i, _ in rows["validation_accuracy"]] == [0, 1, 2, 3, 4]


def test_restored_nan_losses_match_the_nan_the_model_recorded():
    # a run whose loss was NaN on epoch 1, interrupted after epoch 2 and resumed from the
    # checkpoint of epoch 1: its restored rows hold that NaN and must match the model's rows
    nan = float("nan")
    history = extend_history(
        None, history_from_rows({"train_loss": [(0, 9.0), (1, nan), (2, 7.0)]})
    )
    resumed = history_from_rows({"train_loss": [(0, 9.0), (1, nan), (2, 6.5), (3, 6.0)]})
    resumed["train_loss"].attrs["restored_rows"] = 2
    rows = _rows(extend_history(history, resumed))
    assert [i for i, _ in rows["train_loss"]] == [0, 1, 2, 3]
    assert [v for _, v in rows["train_loss"]][2:] == [6.5, 6.0]
