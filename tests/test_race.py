"""The strategy race (`bench search`): the quick race end to end, a row of each kind, run_best on each searcher's
search; a race that cannot run ends before it writes anything."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tune_cvae import cli
from tune_cvae.bench import race
from tune_cvae.bench.settings import CANDIDATE, CONTROLS, DEFAULT, ONE_RUN, RUN_BEST, SINGLE_RUNS
from tune_cvae.common import UserError


# a row of each searcher and each kind (search, run_best's retraining, single run) with the candidate's knowledge
# (start points, prior, portfolio) and the robustness check; every row's space is built in test_strategies.py
ROWS = [CANDIDATE, DEFAULT, "sample-prior+start", "prior+asha+bad-prior", "random", RUN_BEST, ONE_RUN]


def test_a_row_that_cannot_run_is_one_line_before_the_race_writes_anything(tmp_path):
    for portfolio, error in ((["--portfolio", "nope.yaml"], "portfolio: nope.yaml: no such file"),
                             ([], "portfolio \\(.*demo_portfolio.yaml\\)\\[0\\]")):  # not smoke.yaml's values
        args = cli.parser().parse_args(["bench", "search", "--quick", "--space", "smoke.yaml", "--out",
                                        str(tmp_path / "race"), "--strategies", f"random,{CANDIDATE}", *portfolio])
        with pytest.raises(UserError, match=f"smoke.yaml: {error}"):
            race.race(args)
        assert not (tmp_path / "race").exists()


def test_only_a_row_that_tries_the_portfolio_reads_one(tmp_path):
    """The shipped portfolio does not fit smoke.yaml's ranges: rows that try no portfolio (run_best's retraining,
    PBT's) race on it without reading it, and one more row that does ends the race in one line."""
    rows = ["random", RUN_BEST, "pbt"]
    for extra in ([], ["random+start+portfolio"]):
        args = cli.parser().parse_args(["bench", "search", "--quick", "--space", "smoke.yaml", "--out",
                                        str(tmp_path / "race"), "--strategies", ",".join(rows + extra),
                                        "--train-seeds", "0"])
        if extra:
            with pytest.raises(UserError, match="smoke.yaml: portfolio \\(.*demo_portfolio.yaml\\)\\[0\\]"):
                race.plan(args)
        else:
            assert race.plan(args)[0].portfolio == []


def test_a_race_continues_only_with_the_training_seeds_it_began_with(tmp_path):
    """Its searches' trials were seeded one way; rows seeded another are not comparable with them: one line, and
    nothing written. A race from before --train-seeds (no protocol.json) began with 0."""
    begun = {"protocol": 2, "earlier": None}
    for name, k in begun.items():
        out = tmp_path / name
        (out / "ray_results").mkdir(parents=True)
        if k is not None:
            (out / race.PROTOCOL_FILE).write_text(f'{{"train_seeds": {k}}}')
        args = cli.parser().parse_args(["bench", "search", "--quick", "--space", "smoke.yaml", "--out", str(out),
                                        "--strategies", "random", "--train-seeds", "1"])
        with pytest.raises(UserError, match=f"a race with --train-seeds {k or 0}; continue it with"):
            race.race(args)
        assert sorted(p.name for p in out.iterdir()) == ([race.PROTOCOL_FILE] if k else []) + ["ray_results"]


def test_a_race_grown_by_seeds_trains_only_the_new_seeds_of_its_single_runs(tmp_path, monkeypatch):
    """`--seeds 2` then `--seeds 4`: the second sitting trains seeds 2 and 3 of the best start point alone and reads
    0 and 1 back, so every seed has its pair; a race from before the seeds were named is read as it is."""
    trained = []

    def run_search(raw, storage, name, *_):
        seeds = raw["params"]["seed"]["choices"]
        trained.append(seeds)
        (storage / name).mkdir(parents=True)
        (storage / name / "seeds.json").write_text(json.dumps(seeds))
        (storage / name / race.DONE_FILE).write_text("{}")
        return storage / name, 1.0

    def one_run_rows(exp, data, budget, strategy):
        return [({"strategy": strategy, "seed": s, "best_val_psnr": 25.0, "test_score": 20.0 + s, "trial_epochs": 40,
                  "trials": 1, "diverged": 0, "wall_s": 1.0}, [])
                for s in json.loads((exp / "seeds.json").read_text())]

    monkeypatch.setattr(race, "run_search", run_search)
    monkeypatch.setattr(race, "one_run_rows", one_run_rows)
    data = type("Data", (), {"name": "d", "dataset": type("Dataset", (), {"root": tmp_path})})
    space = race.load_space("demo.yaml")
    storage = tmp_path / "ray_results" / "d-b32"
    for seeds, new in (([0, 1], [[0, 1]]), ([0, 1, 2, 3], [[2, 3]]), ([0, 1, 2, 3], []), ([0, 4], [[4]]), ([1], [])):
        if seeds == [1]:  # the first sitting's search as a race from before the seeds were named left it
            (storage / "best-start-point-alone-seeds-0-1").rename(storage / "best-start-point-alone")
        runs, before = [], len(trained)
        race.single_runs(data, 32, (space, None, None, seeds, [ONE_RUN], 0), tmp_path, 2, runs)
        assert [r["seed"] for r, _ in runs] == seeds and {r["test_score"] - r["seed"] for r, _ in runs} == {20}
        assert trained[before:] == new


@pytest.mark.slow
def test_the_quick_race_runs_a_row_of_each_kind_and_run_best_works_on_each_searcher(ray_cluster, builtin_root,
                                                                                       tmp_path):
    from tune_cvae.experiment.best import run_best
    args = cli.parser().parse_args(["bench", "search", "--quick", "--data", str(builtin_root), "--out",
                                    str(tmp_path / "race"), "--strategies", ",".join(ROWS), "--train-seeds", "2"])
    race.race(args)
    table = pd.read_csv(tmp_path / "race" / "searches.csv")
    assert set(table["strategy"]) == set(ROWS) and table["test_score"].notna().all()
    trained_as_searched(tmp_path / "race", table, builtin_root)
    by = table.set_index("strategy")
    searches = table[~table["strategy"].isin([RUN_BEST, *SINGLE_RUNS])]
    assert (searches["trial_epochs"] >= 4).all() and (searches["trial_epochs"] <= 4 + 1).all()  # 2 trials at a time
    assert by.loc[RUN_BEST, "trial_epochs"] == by.loc[DEFAULT, "trial_epochs"] + 8  # demo.yaml's retrain
    assert by.loc[ONE_RUN, "trial_epochs"] == 4 + 8  # the same compute, one run
    compared = pd.read_csv(tmp_path / "race" / "comparisons.csv")
    assert {tuple(p) for p in compared[["row", "control"]].to_numpy()} == {p for p in CONTROLS if set(p) <= set(ROWS)}
    assert (compared["pairs"] == 1).all() and (tmp_path / "race" / "race.png").stat().st_size > 0
    kinds = set()
    for exp in sorted((tmp_path / "race" / "ray_results").glob("*/*")):
        strategy = yaml.safe_load((exp / "search.yaml").read_text())["space"]
        first = (exp / "report" / "index.md").read_text().splitlines()[2]
        assert {"random": "random sampling", "tpe": "TPE", "prior": "prior-guided",
                "sample-prior": "from the prior alone"}[strategy["searcher"]] in first, first
        assert ("ASHA" in first) == (strategy["scheduler"] == "asha"), first
        assert ("the start points" in first) == bool(strategy["points_to_evaluate"]) or "seed" in strategy["params"]
        if (strategy["searcher"], strategy["scheduler"]) in kinds:
            continue  # run_best reads what each searcher and scheduler writes: once each
        kinds.add((strategy["searcher"], strategy["scheduler"]))
        out, summary = run_best(experiment=exp, epochs=1, from_checkpoint=True, out=exp / "best-again")
        assert (out / "submission.csv").is_file() and "score" in summary, (exp, strategy["searcher"])


@pytest.mark.slow
def test_sigterm_to_the_races_process_group_ends_it_and_the_same_command_continues(builtin_root, tmp_path):
    """What Slurm or `timeout` does: SIGTERM to the whole process group, Ray's own processes included. The race
    ends with 143 and one line (Ray's GCS, which once died under it, made it wait a minute and end on a
    connection error); its finished search is kept; the same command continues and reads it, not run again."""
    import glob
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    command = [sys.executable, "-m", "tune_cvae", "bench", "search", "--quick", "--data", str(builtin_root), "--out",
               str(tmp_path / "race"), "--cpus", "1", "--strategies", "random,tpe+asha", "--train-seeds", "0"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray session of its own, as a user's
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(command, env=env, cwd=root, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 600
    while not glob.glob(str(tmp_path / "race/ray_results/*/tpe-asha-seed0/trial_*/result.json")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1].startswith("the race was interrupted") and "Traceback" not in stderr
    finished = list((tmp_path / "race/ray_results").glob("*/random-seed0/race.json"))
    assert len(finished) == 1
    before = finished[0].read_text()
    again = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert finished[0].read_text() == before  # read, not run again
    assert set(pd.read_csv(tmp_path / "race/searches.csv")["strategy"]) == {"random", "tpe+asha"}


def trained_as_searched(out, table, root):
    """--train-seeds 2: each search's winner trained with the search's seed (0); its values trained again with seeds
    100 and 101, once per configuration whichever rows chose it; the row's test score is their mean."""
    from tune_cvae.bench.race_data import Data
    from tune_cvae.experiment.record import read_search
    from tune_cvae.experiment.tables import collect
    from tune_cvae.experiment.winner import best_checkpoint, searched_values, trial_params
    data, configs = Data(root.name, root, out), []
    for exp in (out / "ray_results").glob("*-configs/config-*"):
        runs, space = collect(exp), read_search(exp).space
        assert sorted(runs["seed"]) == [100, 101], exp
        configs.append((space.fixed, np.mean([data.test_score(exp / d, space) for d in runs["trial_dir"]])))
    chosen = set()
    for _, r in table[table["winner_test_score"].notna()].iterrows():
        exp = next((out / "ray_results").glob(f"*-b4/{r['strategy'].replace('+', '-')}-seed0"))
        assert best_checkpoint(exp / f"trial_{r['winner']}", "val_psnr", "max")["config"]["seed"] == 0
        values = searched_values(read_search(exp).space, trial_params(exp / f"trial_{r['winner']}"))
        [mean] = [m for fixed, m in configs if {k: fixed.get(k) for k in values} == values]
        assert r["test_score"] == pytest.approx(mean), r["strategy"]
        chosen.add(json.dumps(values, sort_keys=True))
    assert len(configs) == len(chosen)  # a configuration two rows chose trained once
