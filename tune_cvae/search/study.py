"""The Optuna side of a search: the sampler a space asks for, the study in the experiment folder, and an earlier
study's trials to start from (--warm-start). Optuna only: searcher.py's AskTellSearcher talks to Ray.
"""
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tune_cvae.common import say
from tune_cvae.experiment.files import study_storage


def sampler(space, seed):
    """TPE (seeded, multivariate, constant liar for concurrent trials; its random start sized to the expected
    number of trials) or Optuna's RandomSampler."""
    if space.searcher == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group, constant_liar
    expected = space.num_samples if not space.budget else min(space.num_samples, space.budget // space.max_epochs)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=min(10, max(2, expected // 3)))


def new_study(space, exp_dir, seed, warm_start=None):
    """The study kept in optuna.journal in the experiment folder, named after it, its objective named after the
    metric; an earlier experiment's trials first (--warm-start), then points_to_evaluate."""
    study = optuna.create_study(study_name=exp_dir.name, storage=study_storage(exp_dir),
                                sampler=sampler(space, seed),
                                direction="maximize" if space.mode == "max" else "minimize")
    study.set_metric_names([space.metric])
    if warm_start:
        earlier = warm_trials(Path(warm_start), space)
        study.add_trials(earlier)
        say(f"warm start: {len(earlier)} trials of {warm_start} entered the study")
    for point in space.points_to_evaluate:
        study.enqueue_trial(point)
    return study


def distribution(p):
    if p["type"] == "categorical":
        return optuna.distributions.CategoricalDistribution(p["choices"])
    kind = optuna.distributions.IntDistribution if p["type"] == "int" else optuna.distributions.FloatDistribution
    return kind(p["low"], p["high"], log=p.get("log", False))


def warm_trials(earlier, space):
    """The finished, pruned and diverged trials of an earlier experiment's study whose every value lies in this
    space (same parameters, same ranges), as trials to add to a new study."""
    study = optuna.load_study(study_name=earlier.name, storage=study_storage(earlier))
    wanted = {name: distribution(p) for name, p in space.params.items()}
    kept = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if all(wanted.get(k) == d for k, d in t.distributions.items()):
            kept.append(optuna.trial.create_trial(
                state=t.state, value=t.value if t.state == TrialState.COMPLETE else None, params=t.params,
                distributions=t.distributions, intermediate_values=t.intermediate_values,
                user_attrs={"warm_start_from": f"{earlier} trial {t.user_attrs.get('ray_trial_id', t.number)}",
                            **{k: v for k, v in t.user_attrs.items() if k != "ray_trial_id"}}))
    return kept
