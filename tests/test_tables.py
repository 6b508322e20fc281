"""The trial table from an experiment folder's files (no Ray needed): statuses, ranks, empty conditional cells,
the summary by KL-annealing type, significant digits kept."""
from helpers import make_experiment, read_trials
from tune_cvae.experiment import report
from tune_cvae.experiment.tables import summary


def test_statuses_ranks_and_empty_conditional_cells(tmp_path):
    exp = make_experiment(tmp_path)
    table = report.write(exp)
    assert list(table.trial_id) == ["c3", "a1", "b2", "d4"]  # best value over epochs, NaN-only last
    assert dict(zip(table.trial_id, table.status)) == {"a1": "finished", "b2": "stopped early",
                                                       "c3": "diverged (NaN)", "d4": "errored"}
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert (table.kl_anneal_cycle == "").all()  # no Cyclical trial: the conditional column stays empty
    csv = read_trials(exp / "trials.csv")
    assert csv.loc[csv.trial_id == "a1", "best_val_psnr"].item() == 22.5
    assert "<table" in (exp / "trials.html").read_text() and "| c3 |" in (exp / "trials.md").read_text()
    by_type = summary(table, "val_psnr").set_index("kl_anneal_type")
    assert by_type.loc["None", "trials"] == 2 and by_type.loc["None", "best"] == 23.0


def test_small_values_keep_their_significant_digits(tmp_path):
    exp = make_experiment(tmp_path)
    (exp / "trial_a1" / "params.json").write_text('{"kl_anneal_type": "None", "lr": 0.00017, "num_epoch": 3}')
    report.write(exp)
    assert "| 0.00017 |" in (exp / "trials.md").read_text()
    assert "0.00017" in (exp / "report" / "index.html").read_text()
    table = read_trials(exp / "trials.csv")
    assert table.set_index("trial_id").loc["a1", "best_epoch"] == 3
