"""The race's figures: medians and quartiles per row, each row against its control paired by dataset, budget and
seed, with its win rate and Wilcoxon p-value."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from tune_cvae.bench import race_stats
from tune_cvae.bench.race_runs import curve


def rows(strategy, scores, dataset="a", budget=32):
    return [{"dataset": dataset, "budget": budget, "strategy": strategy, "seed": seed, "best_val_psnr": s + 1,
             "test_score": s, "trial_epochs": budget, "trials": 9, "diverged": 0, "wall_s": 1.0}
            for seed, s in enumerate(scores)]


def test_the_summary_gives_median_and_quartiles_per_dataset_and_over_both():
    table = pd.DataFrame(rows("random+start", [20.0, 21.0, 22.0, 23.0]) + rows("random+start", [10.0, 30.0], "b"))
    summary = race_stats.summary(table, "val_psnr").set_index(["dataset", "strategy"])
    a = summary.loc[("a", "random+start")]
    assert (a["test median"], a["test q1"], a["test q3"], a["searches"]) == (21.5, 20.75, 22.25, 4)
    both = summary.loc[(race_stats.ALL, "random+start")]
    assert both["searches"] == 6 and both["test mean"] == pytest.approx(21.0)


def test_a_row_is_paired_with_its_control_by_dataset_budget_and_seed():
    mine = rows("prior+asha+start+portfolio", [21.0, 22.0, 19.0, 25.0, 24.0, 23.0])
    theirs = rows("random+start", [20.0, 20.0, 20.0, 20.0, 20.0, 20.0])[:5]  # seed 5 missing: not paired
    compared = race_stats.comparisons(pd.DataFrame(mine + theirs))
    line = compared.set_index("control").loc["random+start"]
    diffs = np.array([1.0, 2.0, -1.0, 5.0, 4.0])
    assert line["pairs"] == 5 and line["mean diff (dB)"] == pytest.approx(diffs.mean())
    assert line["win rate"] == pytest.approx(0.8)
    assert line["Wilcoxon p"] == pytest.approx(wilcoxon(diffs).pvalue)


def test_ties_count_half_and_a_row_equal_to_its_control_has_p_one():
    same = rows("prior+asha+start+portfolio", [20.0, 21.0]) + rows("random+start", [20.0, 21.0])
    line = race_stats.comparisons(pd.DataFrame(same)).set_index("control").loc["random+start"]
    assert line["win rate"] == 0.5 and line["Wilcoxon p"] == 1.0
    assert math.isnan(race_stats.wilcoxon(np.array([1.0])))


def test_the_best_so_far_curve_follows_the_results_in_the_order_they_came(tmp_path):
    for name, results in (("trial_a", [(1, 10.0, 1.0), (2, 12.0, 3.0)]), ("trial_b", [(1, 11.0, 2.0)])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "epochs.jsonl").write_text("".join(json.dumps({"epoch": e, "val_psnr": v, "wall_time": t})
                                                              + "\n" for e, v, t in results))
    assert curve([tmp_path / "trial_a", tmp_path / "trial_b"], "val_psnr", "max") == [10.0, 11.0, 12.0]


def test_a_race_without_a_row_beside_its_control_says_so(tmp_path):
    runs = [(r, [r["best_val_psnr"]]) for r in rows("random", [20.0, 21.0])]
    race_stats.write(tmp_path, runs, "val_psnr", {"a": 19.0})
    assert (tmp_path / "comparisons.md").read_text().strip() == race_stats.NO_PAIRS
    assert list(pd.read_csv(tmp_path / "comparisons.csv").columns)[:4] == ["budget", "dataset", "row", "control"]


def test_a_race_of_single_runs_alone_writes_no_table_before_its_runs_have_finished(tmp_path):
    """Its seeds' loop has no search to tabulate (`--strategies "best start point alone"` once ended on a
    KeyError there); the tables come when its runs do."""
    assert race_stats.write(tmp_path, [], "val_psnr", {"a": 19.0}) is None
    assert list(tmp_path.iterdir()) == []
    runs = [(r, [r["best_val_psnr"]]) for r in rows("best start point alone", [21.0, 22.0])]
    assert race_stats.write(tmp_path, runs, "val_psnr", {"a": 19.0})["searches"].tolist() == [2]


def test_a_race_run_in_sittings_has_one_table_and_a_search_measured_again_replaces_its_row(tmp_path):
    first = [(r, [r["best_val_psnr"]]) for r in rows("random+start", [20.0, 21.0]) + rows("random", [18.0], "b")]
    race_stats.write(tmp_path, first, "val_psnr", {"a": 19.0, "b": 17.0})
    second = [(r, [r["best_val_psnr"]]) for r in rows("sample-prior+start", [21.0, 22.0, 23.0])
              + rows("random+start", [20.5])]  # seed 0 of random+start measured again
    race_stats.write(tmp_path, second, "val_psnr", {"a": 19.0})
    table = pd.read_csv(tmp_path / "searches.csv").set_index(["dataset", "strategy", "seed"])
    assert len(table) == 6 and table.loc[("a", "random+start", 0), "test_score"] == 20.5
    assert table.loc[("b", "random", 0), "test_score"] == 18.0
    line = pd.read_csv(tmp_path / "comparisons.csv").set_index("row").loc["sample-prior+start"]
    assert line["pairs"] == 2 and line["mean diff (dB)"] == pytest.approx(0.75)  # (21 - 20.5 + 22 - 21) / 2
    assert json.loads((tmp_path / "race.json").read_text())["repeat_first_frame"] == {"a": 19.0, "b": 17.0}
