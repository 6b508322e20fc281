"""A portfolio from earlier searches: greedy over their datasets, scored by nearest trials, written for a space."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from helpers import make_experiment
from tune_cvae.experiment.portfolio import greedy, score_matrix, trials_of
from tune_cvae.experiment.record import read_search
from tune_cvae.experiment.space_yaml import parse

ROOT = Path(__file__).resolve().parent.parent


def test_greedy_takes_what_the_portfolio_lacks_next():
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]])
    assert greedy(scores, 1) == [2]  # the best alone on average
    assert greedy(scores, 2) == [2, 0]  # then what lifts the first dataset most (tie: the first)
    assert greedy(scores, 3) == [2, 0, 1]


def test_a_candidate_scores_its_own_percentile_where_it_ran_and_its_nearest_trials_elsewhere(tmp_path):
    """Each fake search has two usable trials: its finished a1 (22.5) and b2 (Monotonic, lr 0.002; 19.0)."""
    a, b = make_experiment(tmp_path / "a"), make_experiment(tmp_path / "b")
    (b / "trial_a1" / "params.json").write_text(json.dumps({"kl_anneal_type": "Monotonic", "lr": 0.0025,
                                                             "num_epoch": 3}))
    space = read_search(a).space
    candidates, scores = score_matrix(space, [trials_of(a, space), trials_of(b, space)])
    assert candidates == [{"kl_anneal_type": "None", "lr": 0.001}, {"kl_anneal_type": "Monotonic", "lr": 0.0025}]
    assert scores[0, 0] == 1.0 and scores[1, 1] == 1.0  # each is the best where it ran
    assert scores[1, 0] == 0.0  # in a, b's winner is nearest a's b2 (Monotonic, lr 0.002): the worst there
    assert scores[0, 1] == 0.0  # in b, a's winner (kl None) is nearest b's b2 (lr 0.002 against 0.0025)
    assert greedy(scores, 2) == [0, 1]


def test_the_portfolio_command_writes_a_file_a_space_can_name(tmp_path):
    a, b = make_experiment(tmp_path / "a"), make_experiment(tmp_path / "b")
    out = tmp_path / "folio.yaml"
    proc = subprocess.run([sys.executable, "-m", "tune_cvae", "portfolio", str(a), str(b), "--k", "2", "--out",
                           str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    written = yaml.safe_load(out.read_text())
    assert written["portfolio"] == [{"kl_anneal_type": "None", "lr": 0.001}]  # the same trial twice: taken once
    assert [e["experiment"] for e in written["built_from"]] == [str(a), str(b)]
    space = parse({**read_search(a).space.to_dict(), "portfolio": str(out)}, str(tmp_path / "space.yaml"))
    assert space.portfolio == written["portfolio"]


def test_a_portfolio_from_searches_without_a_finished_trial_is_one_line(tmp_path):
    a = make_experiment(tmp_path / "a")
    (a / "trial_a1" / "error.txt").write_text("boom")  # its only finished trial now errored
    proc = subprocess.run([sys.executable, "-m", "tune_cvae", "portfolio", str(a), "--out", str(tmp_path / "f.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {a}: no finished trial to take into a portfolio"
    assert not (tmp_path / "f.yaml").exists()
