"""The Optuna side of a search: the sampler a space asks for, the study in the experiment folder, and an earlier
study's trials to start from (--warm-start). Optuna only: searcher.py's AskTellSearcher talks to Ray.
"""
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

# TPE's group and constant_liar, Study.set_metric_names: stable in use here, "experimental" in Optuna's words
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

from tune_cvae.common import say
from tune_cvae.experiment.files import study_storage
from tune_cvae.search.priorband import PriorBandSampler


def sampler(space, seed):
    """TPE (seeded, multivariate, constant liar for concurrent trials; its random start sized to the expected
    number of trials), Optuna's RandomSampler, or the prior-guided sampler (priorband.py)."""
    if space.searcher == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.searcher in ("prior", "sample-prior"):
        return PriorBandSampler(space, seed, only_prior=space.searcher == "sample-prior")
    expected = space.num_samples if not space.budget else min(space.num_samples, space.budget // space.max_epochs)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=min(10, max(2, expected // 3)))


def new_study(space, exp_dir, seed, warm_start=None):
    """The study kept in optuna.journal in the experiment folder, named after it, its objective named after the
    metric; an earlier experiment's trials first (--warm-start), then points_to_evaluate, then the portfolio."""
    study = optuna.create_study(study_name=exp_dir.name, storage=study_storage(exp_dir),
                                sampler=sampler(space, seed),
                                direction="maximize" if space.mode == "max" else "minimize")
    study.set_metric_names([space.metric])
    if warm_start:
        earlier = warm_trials(Path(warm_start), space)
        study.add_trials(earlier)
        say(f"warm start: {len(earlier)} trials of {warm_start} entered the study")
    for source, points in (("start point", space.points_to_evaluate), ("portfolio", space.portfolio)):
        for point in points:
            study.enqueue_trial(point, user_attrs={"source": source})
    return study


def source_of(study, trial):
    """Which source proposed a trial just asked: an enqueued start point or portfolio entry, or the sampler's
    (TPE, random; the prior-guided sampler names its own: prior, incumbent, uniform)."""
    if "source" in trial.user_attrs:
        return trial.user_attrs["source"]
    named = getattr(study.sampler, "source_of", None)
    return (named and named(trial.number)) or ("TPE" if isinstance(study.sampler, optuna.samplers.TPESampler)
                                                else "random")


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
                user_attrs={**{k: v for k, v in t.user_attrs.items() if k != "ray_trial_id"}, "source": "warm start",
                            "warm_start_from": f"{earlier} trial {t.user_attrs.get('ray_trial_id', t.number)}"}))
    return kept
