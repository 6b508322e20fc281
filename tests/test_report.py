"""Trial tables from an experiment folder's files (no Ray needed)."""
import json

import pandas as pd

from tune_cvae import report
from tune_cvae.best import winner
from tune_cvae.space import Search, parse, write_search


def make_experiment(root):
    space = parse({"metric": "val_psnr", "mode": "max", "max_epochs": 3, "num_samples": 4, "params": {
        "kl_anneal_type": {"type": "categorical", "choices": ["Cyclical", "Monotonic", "None"]},
        "kl_anneal_cycle": {"type": "int", "low": 1, "high": 3, "when": {"kl_anneal_type": "Cyclical"}},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}, "test.yaml")
    write_search(root, Search(space, "/nowhere", 0, {"cpu": 1, "gpu": 0}))
    trials = {
        "a1": ({"kl_anneal_type": "None", "lr": 0.001, "num_epoch": 3}, [20.0, 21.0, 22.5], False),
        "b2": ({"kl_anneal_type": "Monotonic", "lr": 0.002, "num_epoch": 3}, [19.0], False),
        "c3": ({"kl_anneal_type": "None", "lr": 0.003, "num_epoch": 3}, [23.0, float("nan")], False),
        "d4": ({"kl_anneal_type": "Monotonic", "lr": 0.004, "num_epoch": 3}, [], True),
    }
    for tid, (config, psnrs, errored) in trials.items():
        d = root / f"trial_{tid}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(config))
        lines = [json.dumps({"trial_id": tid, "epoch": i + 1, "val_psnr": v, "val_psnr_600": v,
                             "time_total_s": 10.0 * (i + 1)}) for i, v in enumerate(psnrs)]
        (d / "result.json").write_text("\n".join(lines) + "\n")
        if errored:
            (d / "error.txt").write_text("boom")
    return root


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
