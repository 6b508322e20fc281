"""Trial tables from an experiment folder's files (no Ray needed)."""

import pandas as pd

from helpers import make_experiment
from tune_cvae import report
from tune_cvae.best import winner


def test_statuses_ranks_and_empty_conditional_cells(tmp_path):
    exp = make_experiment(tmp_path)
    table = report.write(exp)
    assert list(table.trial_id) == ["c3", "a1", "b2", "d4"]  # best value over epochs, NaN-only last
    assert dict(zip(table.trial_id, table.status)) == {"a1": "finished", "b2": "stopped early",
                                                       "c3": "diverged (NaN)", "d4": "errored"}
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert (table.kl_anneal_cycle == "").all()  # no Cyclical trial: the conditional column stays empty
    csv = pd.read_csv(exp / "trials.csv")
    assert csv.loc[csv.trial_id == "a1", "best_val_psnr"].item() == 22.5
    assert "<table" in (exp / "trials.html").read_text() and "| c3 |" in (exp / "trials.md").read_text()
    by_type = report.summary(table, "val_psnr").set_index("kl_anneal_type")
    assert by_type.loc["None", "trials"] == 2 and by_type.loc["None", "best"] == 23.0


def test_winner_skips_errored_and_nan(tmp_path):
    exp = make_experiment(tmp_path)
    _, row, trial_dir = winner(exp)
    assert row["trial_id"] == "a1" and trial_dir.name == "trial_a1"  # c3 was better, then went NaN
