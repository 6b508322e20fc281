"""The report of a search: every figure and index file, the table's numbers in index.md."""
import pandas as pd
import pytest

from helpers import make_experiment, read_trials
from tune_cvae.experiment import report


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


def test_the_report_of_a_search_without_usable_trials_is_the_table_alone(tmp_path):
    exp = make_experiment(tmp_path)
    for d in ("trial_a1", "trial_b2", "trial_c3"):
        (exp / d / "error.txt").write_text("boom")
    report.write(exp)
    assert sorted(p.name for p in (exp / "report").iterdir()) == ["index.html", "index.md"]
