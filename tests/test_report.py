"""Trial tables from an experiment folder's files (no Ray needed)."""
import json

import pandas as pd
import pytest

from helpers import make_experiment, read_trials
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
    csv = read_trials(exp / "trials.csv")
    assert csv.loc[csv.trial_id == "a1", "best_val_psnr"].item() == 22.5
    assert "<table" in (exp / "trials.html").read_text() and "| c3 |" in (exp / "trials.md").read_text()
    by_type = report.summary(table, "val_psnr").set_index("kl_anneal_type")
    assert by_type.loc["None", "trials"] == 2 and by_type.loc["None", "best"] == 23.0


def test_winner_skips_errored_and_nan(tmp_path):
    exp = make_experiment(tmp_path)
    _, row, trial_dir = winner(exp)
    assert row["trial_id"] == "a1" and trial_dir.name == "trial_a1"  # c3 was better, then went NaN


REPORT_FILES = ["tfr.png", "kl_types.png", "psnr_per_frame.png", "importance.png", "importance.csv", "parallel.png",
                "asha.png", "index.html", "index.md"]


def test_a_search_leaves_every_report_file(smoke):
    report.write(smoke)
    out = smoke / "report"
    missing = [name for name in REPORT_FILES if not (out / name).is_file()]
    assert not missing
    for name in REPORT_FILES:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "index.html").read_text()
    assert all(f"src='{name}'" in html for name in REPORT_FILES if name.endswith(".png"))
    table = read_trials(smoke / "trials.csv")
    assert all(f"href='../{d}/'" in html for d in table.trial_dir)  # every trial links to its folder
    importance = pd.read_csv(out / "importance.csv")
    assert set(importance.parameter) <= {"kl_anneal_type", "kl_anneal_cycle", "tfr_d_step", "lr"}
    assert abs(importance.importance.sum() - 1) < 1e-6


def test_index_md_shows_the_numbers_of_trials_csv(smoke):
    report.write(smoke)
    table = read_trials(smoke / "trials.csv", keep_default_na=False)
    rows = [line.split("|")[1:-1] for line in (smoke / "report" / "index.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| rank")]
    by_id = {cells[1].strip(): [c.strip() for c in cells] for cells in rows if len(cells) == len(table.columns) - 1}
    assert set(by_id) == set(table.trial_id)
    columns = [c for c in table.columns if c != "trial_dir"]
    for _, row in table.iterrows():
        for col, cell in zip(columns, by_id[row.trial_id]):
            if _number(cell) is not None and _number(row[col]) is not None:
                assert _number(cell) == pytest.approx(_number(row[col]), rel=5e-4), (row.trial_id, col)
            else:
                assert cell == str(row[col]), (row.trial_id, col)


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def test_small_values_keep_their_significant_digits(tmp_path):
    exp = make_experiment(tmp_path)
    (exp / "trial_a1" / "params.json").write_text('{"kl_anneal_type": "None", "lr": 0.00017, "num_epoch": 3}')
    report.write(exp)
    assert "| 0.00017 |" in (exp / "trials.md").read_text()
    assert "0.00017" in (exp / "report" / "index.html").read_text()
    table = read_trials(exp / "trials.csv")
    assert table.set_index("trial_id").loc["a1", "best_epoch"] == 3


def test_the_report_of_a_search_without_usable_trials_is_the_table_alone(tmp_path):
    exp = make_experiment(tmp_path)
    for d in ("trial_a1", "trial_b2", "trial_c3"):
        (exp / d / "error.txt").write_text("boom")
    report.write(exp)
    assert sorted(p.name for p in (exp / "report").iterdir()) == ["index.html", "index.md"]


def test_epoch_axes_tick_whole_epochs_and_counts_read_as_sentences(tmp_path, monkeypatch):
    from tune_cvae import figures
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig))
    results = [{"epoch": e, "tfr": 1.0, "beta": 0.5, "loss": 1.0 / e, "mse": 0.1, "kl": 0.2, "val_psnr": 20.0 + e,
                "teacher_forcing": e == 1} for e in (1, 2, 3)]
    figures.tfr(results, "a1", tmp_path / "tfr.png")
    figures.kl_types({"None": ("a1", results, 23.0, 1, 1)}, tmp_path / "kl.png", "val_psnr", 3)
    reading = figures.asha([("a1", "finished", [1, 2, 3], [20, 21, 22]), ("b2", "stopped early", [1], [19])],
                           "val_psnr", [1], 3, tmp_path / "asha.png")
    for fig in drawn:
        fig.canvas.draw()
        for ax in fig.axes[:1] + fig.axes[-2:]:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert reading[0].startswith("1 trial finished, 1 trial was stopped early at the rungs")


def test_a_resumed_trials_epochs_count_once_the_later_report_winning(tmp_path):
    """Ray appends again the epochs a resumed trial trains after its last saved checkpoint."""
    lines = [{"epoch": 1, "val_psnr": 10.0}, {"epoch": 2, "val_psnr": 11.0}, {"epoch": 2, "val_psnr": 11.5},
             {"epoch": 3, "val_psnr": 12.0}]
    (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert [(r["epoch"], r["val_psnr"]) for r in report.trial_results(tmp_path)] == [(1, 10.0), (2, 11.5), (3, 12.0)]
