"""The winner of a search: the best usable trial."""
from helpers import make_experiment
from tune_cvae.experiment.winner import winner


def test_winner_skips_errored_and_nan(tmp_path):
    exp = make_experiment(tmp_path)
    _, row, trial_dir = winner(exp)
    assert row["trial_id"] == "a1" and trial_dir.name == "trial_a1"  # c3 was better, then went NaN
