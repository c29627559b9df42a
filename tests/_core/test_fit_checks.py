"""Checks of training arguments (``_core._fit_checks``), before any model changes."""

import pytest

from omicformer._core._fit_checks import check_first_epoch_validated, check_fit_args


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size=2.5 must be an integer"),
        ({"max_epochs": 1.5}, "max_epochs=1.5 must be an integer"),
        ({"max_steps": 0}, "max_steps=0 must be an integer >= 1"),
        ({"validation_size": 1.0}, r"validation_size=1.0 must be a number in \[0, 1\)"),
        ({"validation_size": "0.1"}, "validation_size='0.1' must be a number"),
        ({"dropout": -0.1}, r"dropout=-0.1 must be a number in \[0, 1\)"),
        # DataLoader's own errors came late: a float inside Lightning's fit (unnamed), a str
        # or None from a comparison, -1 after a backed file had been read once
        ({"num_workers": 1.5}, "num_workers=1.5 must be an integer >= 0"),
        ({"num_workers": "2"}, "num_workers='2' must be an integer >= 0"),
        ({"num_workers": -1}, "num_workers=-1 must be an integer >= 0"),
        ({"num_workers": True}, "num_workers=True must be an integer >= 0"),
    ],
)
def test_check_fit_args_names_the_bad_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_fit_args(**{"batch_size": 8, **kwargs})
    check_fit_args(batch_size=8, max_epochs=2, max_steps=None, validation_size=0.1, dropout=0.0)


def test_a_step_cap_inside_the_first_epoch_is_found_as_counted_by_hand():
    # 30 minibatches: 30 steps in the first epoch, 15 with gradients accumulated over 2,
    # 3 with limit_train_batches=0.1 (int(30 * 0.1)), 2 with limit_train_batches=2
    batches = range(30)
    with pytest.raises(ValueError, match=r"max_steps=29 ends the run inside the first epoch \(30"):
        check_first_epoch_validated(batches, 29, 1, {})
    with pytest.raises(ValueError, match=r"\(15 steps\)"):
        check_first_epoch_validated(batches, 14, 2, {})
    check_first_epoch_validated(batches, 15, 2, {})
    check_first_epoch_validated(batches, 3, 1, {"limit_train_batches": 0.1})
    with pytest.raises(ValueError, match=r"\(2 steps\)"):
        check_first_epoch_validated(batches, 1, 1, {"limit_train_batches": 2})
    check_first_epoch_validated(batches, None, 1, {})  # no cap
    check_first_epoch_validated(iter(batches), 1, 1, {})  # a stream: no length to count


def test_the_first_epoch_check_counts_one_process_of_several():
    # before the processes start the loader counts all 8 minibatches; 2 DDP processes train
    # 4 each (ceil(8 / 2)), 3 processes ceil(8 / 3) = 3: 6 steps validate an epoch, 3 do not
    batches = range(8)
    check_first_epoch_validated(batches, 6, 1, {}, world=2)
    with pytest.raises(ValueError, match=r"max_steps=3 ends .* \(4 steps\)"):
        check_first_epoch_validated(batches, 3, 1, {}, world=2)
    check_first_epoch_validated(batches, 3, 1, {}, world=3)
    with pytest.raises(ValueError, match=r"\(8 steps\)"):
        check_first_epoch_validated(batches, 6, 1, {})
