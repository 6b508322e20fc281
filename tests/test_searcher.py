"""The ask/tell searcher: the strategy a space names, what the study is told of each ending, the budget it shares
with the stopper."""
import math
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from ray.tune.search import Searcher

from tune_cvae.experiment.space import SpaceError
from tune_cvae.experiment.space_yaml import parse
from tune_cvae.search.budget import Budget
from tune_cvae.search.searcher import AskTellSearcher, make_searcher
from tune_cvae.search.tuner import make_scheduler

ROOT = Path(__file__).resolve().parent.parent
ONE = {"epoch": 1, "val_psnr": 20.0}


def smoke_space(**changes):
    raw = yaml.safe_load((ROOT / "search_spaces/smoke.yaml").read_text())
    return parse({**raw, **changes})


def searcher_on(tmp_path, space, name="exp"):
    exp = tmp_path / name
    exp.mkdir()
    return make_searcher(space, exp, 0, Budget(space.budget)), exp


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
    assert type(make_scheduler(space)).__name__ == "FIFOScheduler"
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
    result and the searcher proposes no more. The count is saved with the searcher and restored into the budget
    the stopper shares, so a resumed search goes on from what was spent."""
    space = smoke_space(budget=5, points_to_evaluate=[])
    searcher, exp = searcher_on(tmp_path, space)
    stop = searcher.budget  # what the Tuner's run_config holds as its stopper
    searcher.suggest("a")
    searcher.suggest("b")
    assert not stop("a", {**ONE, "epoch": 3}) and not stop("b", {**ONE, "epoch": 1})
    searcher.save(tmp_path / "searcher.pkl")
    assert stop("b", {**ONE, "epoch": 2}) and searcher.suggest("c") == Searcher.FINISHED
    shared = Budget(space.budget)  # a new process: Ray unpickles the stopper and the searcher with one budget
    restored = AskTellSearcher(space, searcher.study, shared)
    restored.restore(tmp_path / "searcher.pkl")
    assert restored.budget is shared and shared.epochs == {"a": 3, "b": 1}
    assert not shared.spent() and Budget(4).spent() is False
    shared.total = 4
    assert shared.spent() and restored.suggest("c") == Searcher.FINISHED


def test_a_searcher_restored_from_a_state_older_than_its_journal_never_tells_a_trial_twice(tmp_path):
    """What a SIGKILL between a tell and the next save leaves: the journal (append-only) has heard of a trial's end
    and of a trial asked since; the saved state has not. Restored, the searcher goes by the journal: the told
    trial's result coming again (Ray resumes it) is not told again, the trial asked since is FAIL, and the search
    goes on."""
    space = smoke_space(points_to_evaluate=[])
    searcher, exp = searcher_on(tmp_path, space)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_result("a", {"epoch": 1, "val_psnr": 20.0})
    searcher.save(tmp_path / "searcher.pkl")  # the last save before the kill
    searcher.on_trial_complete("a", {"epoch": 3, "val_psnr": 21.0})  # told: COMPLETE in the journal
    searcher.suggest("c")  # asked: RUNNING in the journal, unknown to the saved state and to Ray's
    restored = AskTellSearcher(space, None, Budget())
    restored.restore(tmp_path / "searcher.pkl")  # a new process: its study replays the journal
    restored.on_trial_result("a", {"epoch": 3, "val_psnr": 21.0})
    restored.on_trial_complete("a", {"epoch": 3, "val_psnr": 21.0})  # once raised "Cannot tell a COMPLETE trial"
    restored.on_trial_complete("b", {"epoch": 3, "val_psnr": 19.0})
    states = {t.user_attrs["ray_trial_id"]: t.state for t in restored.study.trials}
    assert states == {"a": TrialState.COMPLETE, "b": TrialState.COMPLETE, "c": TrialState.FAIL}
    assert restored.study.trials[0].value == 21.0 and isinstance(restored.suggest("d"), dict)
