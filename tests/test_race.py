"""Search strategies (searcher, scheduler, budget, warm start) and the strategy race (`bench search`)."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from helpers import read_trials
from tune_cvae import UserError, cli, race, report, search, study
from tune_cvae.space import SpaceError, load_space, parse

ROOT = Path(__file__).resolve().parent.parent
ONE = {"epoch": 1, "val_psnr": 20.0}


def smoke_space(**changes):
    raw = yaml.safe_load((ROOT / "search_spaces/smoke.yaml").read_text())
    return parse({**raw, **changes})


def searcher_on(tmp_path, space, name="exp"):
    exp = tmp_path / name
    exp.mkdir()
    return search._searcher(space, exp, seed=0), exp


@pytest.mark.parametrize("key, value, message", [("searcher", "grid", "searcher: must be one of tpe, random"),
                                                 ("scheduler", "hyperband", "scheduler: must be one of asha, none"),
                                                 ("budget", 0, "budget: must be an integer >= 1")])
def test_a_strategy_key_with_a_bad_value_is_refused_by_name(key, value, message):
    with pytest.raises(SpaceError, match=message):
        smoke_space(**{key: value})


def test_random_and_no_early_stopping_are_what_the_search_builds(tmp_path):
    space = smoke_space(searcher="random", scheduler="none")
    searcher, _ = searcher_on(tmp_path, space)
    assert isinstance(searcher.study.sampler, optuna.samplers.RandomSampler)
    assert type(search._scheduler(space)).__name__ == "FIFOScheduler"
    assert isinstance(searcher_on(tmp_path, smoke_space(), "tpe")[0].study.sampler, optuna.samplers.TPESampler)


def test_a_diverged_trial_is_told_to_the_study_at_the_worst_value_seen(tmp_path):
    """As FAIL, TPE would ignore it and keep proposing where trials diverge; COMPLETE at the worst value puts it
    among the poor trials, and the attribute says why."""
    searcher, _ = searcher_on(tmp_path, smoke_space(points_to_evaluate=[]))
    for trial_id in ("good", "poor", "nan"):
        searcher.suggest(trial_id)
    searcher.on_trial_result("good", {"epoch": 1, "val_psnr": 24.0})
    searcher.on_trial_result("poor", {"epoch": 1, "val_psnr": 11.0})
    searcher.on_trial_result("nan", {"epoch": 1, "val_psnr": 18.0})
    searcher.on_trial_complete("nan", {"epoch": 2, "val_psnr": math.nan, "diverged": True})
    searcher.on_trial_complete("poor", {"epoch": 1, "val_psnr": 11.0})  # stopped early
    diverged, poor = searcher.study.trials[2], searcher.study.trials[1]
    assert diverged.state == TrialState.COMPLETE and diverged.value == 11.0
    assert diverged.user_attrs["diverged"] is True and diverged.user_attrs["ray_trial_id"] == "nan"
    assert poor.state == TrialState.PRUNED


def test_a_diverged_trial_before_any_finite_value_is_a_failure(tmp_path):
    searcher, _ = searcher_on(tmp_path, smoke_space(points_to_evaluate=[]))
    searcher.suggest("nan")
    searcher.on_trial_complete("nan", {"epoch": 1, "val_psnr": math.nan, "diverged": True})
    assert searcher.study.trials[0].state == TrialState.FAIL


def test_the_budget_stops_running_trials_and_proposals_and_survives_a_resume(tmp_path):
    """Trial-epochs are counted from every result; once the budget is spent, running trials stop at their next
    result and the searcher proposes no more. The count is saved with the searcher, so a resumed search goes on
    from what was spent."""
    space = smoke_space(budget=5, points_to_evaluate=[])
    searcher, exp = searcher_on(tmp_path, space)
    stop = search.BudgetStop(exp, space.budget)
    searcher.suggest("a")
    searcher.suggest("b")
    assert not stop("a", {**ONE, "epoch": 3}) and not stop("b", {**ONE, "epoch": 1})
    searcher.save(tmp_path / "searcher.pkl")
    assert stop("b", {**ONE, "epoch": 2}) and searcher.suggest("c") == search.Searcher.FINISHED
    search.LEDGERS.clear()  # a new process
    restored = search.AskTellSearcher(space, searcher.study, exp)
    restored.restore(tmp_path / "searcher.pkl")
    assert search.LEDGERS[str(exp)] == {"a": 3, "b": 1}
    assert not search.budget_spent(exp, 5) and search.budget_spent(exp, 4)


def _earlier_study(folder, distributions):
    folder.mkdir()
    earlier = optuna.create_study(study_name=folder.name, storage=report.study_storage(folder), direction="maximize")
    for value, params in ((20.0, {"lr": 0.002, "tfr_d_step": 0.5}), (15.0, {"lr": 0.004, "tfr_d_step": 0.2})):
        earlier.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value,
                                                    user_attrs={"ray_trial_id": "x"}))
    return earlier


def test_warm_start_takes_the_earlier_trials_whose_values_lie_in_this_space(tmp_path):
    space = smoke_space()
    same = {"lr": study.distribution(space.params["lr"]),
            "tfr_d_step": study.distribution(space.params["tfr_d_step"])}
    _earlier_study(tmp_path / "same", same)
    wider = {**same, "lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)}
    _earlier_study(tmp_path / "wider", wider)
    kept = study.warm_trials(tmp_path / "same", space)
    assert [t.value for t in kept] == [20.0, 15.0]
    assert all(t.user_attrs["warm_start_from"] == f"{tmp_path / 'same'} trial x" for t in kept)
    assert "ray_trial_id" not in kept[0].user_attrs  # the Ray trial is the earlier experiment's
    assert study.warm_trials(tmp_path / "wider", space) == []


def test_warm_start_from_a_folder_without_a_study_is_one_line(tmp_path):
    from tune_cvae.experiment import new_experiment
    with pytest.raises(UserError, match=f"--warm-start {tmp_path}: not an experiment folder"):
        new_experiment("smoke.yaml", "/nowhere", "n", tmp_path / "rr", 0, warm_start=tmp_path)


def test_the_race_gives_each_strategy_its_searcher_scheduler_and_start_points():
    space = load_space("demo.yaml")
    for name in cli.STRATEGY_NAMES[:-3]:
        raw = race.race_space(space, name, 32)
        parsed = parse(raw)
        assert (parsed.searcher, parsed.scheduler, parsed.budget) == (
            name.split("+")[0], "asha" if "asha" in name else "none", 32)
        assert bool(parsed.points_to_evaluate) == name.endswith("+start")
    pbt = parse(race.pbt_race_space(load_space("demo_pbt.yaml"), "pbt", 32))  # 4 trials x 8 epochs = 32
    assert (pbt.scheduler, pbt.num_samples, pbt.max_epochs, pbt.pbt["interval"]) == ("pbt", 4, 8, 2)
    held = parse(race.pbt_race_space(load_space("demo_pbt.yaml"), "random+held", 32))
    assert (held.scheduler, held.searcher, held.fixed, held.max_epochs) == ("none", "random", pbt.fixed, 8)
    default = parse(race.default_space(space, 32, [0, 1, 2]))
    assert default.max_epochs == 32 and default.scheduler == "none" and default.num_samples == 3
    assert {**default.fixed, "seed": 0} == {**space.fixed, **space.points_to_evaluate[0], "seed": 0}


def test_reach_and_the_summary_count_trial_epochs_to_the_baselines_best():
    runs = [({"strategy": "random", "seed": s, "best_val_psnr": v, "test_score": v - 1, "trial_epochs": 4,
              "trials": 1, "diverged": 0, "wall_s": 1.0}, curve) for s, (v, curve) in
            enumerate([(20.0, [15.0, 20.0, 20.0, 20.0]), (22.0, [math.nan, 18.0, 22.0, 22.0])])]
    runs.append(({**runs[0][0], "strategy": "tpe+asha", "best_val_psnr": 25.0}, [21.0, 25.0, 25.0, 25.0]))
    table, summary = race.summarise(runs, "val_psnr", "max")
    assert summary.attrs["target"] == 21.0
    tpe = summary.set_index("strategy").loc["tpe+asha"]
    assert tpe["epochs to baseline's best"] == 1 and tpe["reached"] == "1/1"
    assert summary.set_index("strategy").loc["random"]["reached"] == "1/2"
    assert math.isnan(race.reach([math.nan, 18.0], 21.0, "max")) and race.reach([19.0, 22.0], 21.0, "max") == 2


@pytest.mark.slow
def test_the_quick_race_runs_every_strategy_and_run_best_works_on_each(ray_cluster, builtin_root, tmp_path):
    from tune_cvae.best import run_best
    args = cli.parser().parse_args(["bench", "search", "--quick", "--data", str(builtin_root), "--out",
                                    str(tmp_path / "race")])
    summary = race.race(args)
    assert list(summary["strategy"]) == list(cli.STRATEGY_NAMES)
    table = pd.read_csv(tmp_path / "race" / "searches.csv")
    searches = table[table["strategy"] != "default config"]
    assert (searches["trial_epochs"] >= 4).all() and (searches["trial_epochs"] <= 4 + 1).all()  # 2 trials at a time
    assert table["test_score"].notna().all() and (tmp_path / "race" / "race.png").stat().st_size > 0
    assert "| strategy |" in (tmp_path / "race" / "summary.md").read_text()
    for exp in sorted((tmp_path / "race" / "ray_results").iterdir()):
        strategy = yaml.safe_load((exp / "search.yaml").read_text())["space"]
        assert (exp / "trials.csv").is_file() and (exp / "report" / "index.html").is_file(), exp
        first = (exp / "report" / "index.md").read_text().splitlines()[2]
        assert ("Population Based Training" if strategy["scheduler"] == "pbt" else
                "random sampling" if strategy["searcher"] == "random" else "TPE") in first, first
        assert ("ASHA" in first) == (strategy["scheduler"] == "asha"), first
        out, summary = run_best(experiment=exp, epochs=1, from_checkpoint=True, out=exp / "best")
        assert (out / "submission.csv").is_file() and "score" in summary, (exp, strategy["searcher"])


def _interrupted_search(ray_cluster, builtin_root, storage, name, *flags):
    """run_search.py in a process of its own, Ctrl-C once its first trial has reported; returns its exit status."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.Popen([sys.executable, "run_search.py", "--space", "smoke", "--data", str(builtin_root),
                             "--storage", str(storage), "--name", name, *flags], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not any(p.stat().st_size for p in storage.glob(f"{name}/trial_*/result.json")):
        assert proc.poll() is None and time.time() < deadline, "search ended before any trial reported"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=120)


@pytest.mark.slow
def test_a_warm_started_search_holds_the_earlier_trials_once_and_resumes(ray_cluster, builtin_root, smoke, tmp_path):
    status = _interrupted_search(ray_cluster, builtin_root, tmp_path, "w", "--warm-start", str(smoke),
                                 "--samples", "3")
    assert status == 130
    exp = search.run(None, resume=True, name="w", storage=tmp_path, dashboard=False, verbose=0)
    study = optuna.load_study(study_name="w", storage=report.study_storage(exp))
    earlier = optuna.load_study(study_name="smoke", storage=report.study_storage(smoke))
    warm = [t for t in study.trials if "warm_start_from" in t.user_attrs]
    assert len(warm) == len([t for t in earlier.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)])
    assert len(study.trials) == len(warm) + 3 and len(read_trials(exp / "trials.csv")) == 3
    assert yaml.safe_load((exp / "search.yaml").read_text())["warm_start"] == str(Path(smoke).resolve())


@pytest.mark.slow
def test_run_search_flags_choose_the_strategy_and_the_budget(ray_cluster, builtin_root, tmp_path):
    """--searcher random --scheduler none --budget 3 over smoke.yaml (TPE + ASHA, 6 trials): the flags win, the
    search ends on its budget (exit 0, not an interruption), and search.yaml and the report say what ran."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--data", str(builtin_root),
                           "--storage", str(tmp_path), "--name", "f", "--searcher", "random", "--scheduler", "none",
                           "--budget", "3"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = yaml.safe_load((tmp_path / "f" / "search.yaml").read_text())["space"]
    assert (recorded["searcher"], recorded["scheduler"], recorded["budget"]) == ("random", "none", 3)
    table = read_trials(tmp_path / "f" / "trials.csv")
    assert 3 <= table["epochs"].sum() <= 4 and len(table) < 6  # 2 trials at a time: one may finish its epoch
    assert "interrupted" not in set(table["status"]) and "continue it with" not in proc.stderr
    assert "random sampling, no early stopping, until they had trained 3 epochs in all" in \
        (tmp_path / "f" / "report" / "index.md").read_text()
