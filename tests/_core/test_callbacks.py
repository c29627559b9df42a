"""The training callbacks' messages (``_core._callbacks``): durations, long CPU runs."""

from omicformer._core._callbacks import format_duration, long_run_message


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
