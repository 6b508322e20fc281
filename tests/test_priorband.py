"""The prior-guided sampler (searcher: prior): its sources, and weights that follow the evidence."""
import math

import numpy as np
import optuna

from helpers import GOOD
from tune_cvae.experiment.space import DefineByRun
from tune_cvae.experiment.space_yaml import parse
from tune_cvae.search.priorband import PriorBandSampler, bracket_cost, rungs

optuna.logging.set_verbosity(optuna.logging.WARNING)
BELIEVED = {**GOOD, "max_epochs": 4, "grace_period": 1, "reduction_factor": 2, "points_to_evaluate": [],
            "params": {"kl_anneal_type": {**GOOD["params"]["kl_anneal_type"],
                                          "prior": {"value": "None", "probability": 0.9}},
                       "lr": {**GOOD["params"]["lr"], "prior": {"value": 1e-3, "confidence": "high"}}}}


def run(space, objective, n, seed=0, only_prior=False):
    """n trials of the sampler on a study, each reporting `objective(params)` at every epoch."""
    sampler = PriorBandSampler(space, seed, only_prior=only_prior)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(n):
        trial = study.ask()
        DefineByRun(space)(trial)
        value = objective(trial.params)
        for epoch in range(1, space.max_epochs + 1):
            trial.report(value, epoch)
        study.tell(trial, value)
    return sampler, study


def test_the_rungs_and_one_brackets_cost_follow_asha():
    space = parse(BELIEVED, "p.yaml")
    assert rungs(space) == [1, 2, 4]
    assert bracket_cost([1, 2, 4], 2) == 4 * 1 + 2 * 1 + 1 * 2


def test_before_any_evidence_half_the_trials_are_uniform_and_half_come_from_the_prior():
    sampler, _ = run(parse(BELIEVED, "p.yaml"), lambda p: 20.0, 1)
    weights, incumbent = sampler.weights(optuna.create_study(direction="maximize"))
    assert weights == [0.5, 0.0, 0.5] and incumbent is None


def sources_and_weights(best_lr, seed=0):
    """40 trials where the value falls with the distance of lr from `best_lr` (decades)."""
    space = parse(BELIEVED, "p.yaml")
    sampler, study = run(space, lambda p: 25 - 5 * abs(math.log10(p["lr"] / best_lr)), 40, seed)
    return [sampler.source_of(t.number) for t in study.trials], sampler.weights(study)[0], study


def test_a_prior_the_best_trials_confirm_keeps_its_weight():
    sources, (w_prior, w_inc, w_uniform), study = sources_and_weights(best_lr=1e-3)
    assert set(sources) == {"prior", "incumbent", "uniform"} and w_uniform == 0.5
    assert w_prior > 0.1
    best = max(study.trials, key=lambda t: t.value)
    assert abs(math.log10(best.params["lr"] / 1e-3)) < 0.1


def test_a_prior_the_best_trials_contradict_loses_its_weight_to_the_incumbent():
    sources, (w_prior, w_inc, _), study = sources_and_weights(best_lr=9e-3)  # the prior says 1e-3, high
    assert w_inc > 10 * w_prior
    assert sources[-20:].count("prior") < sources[-20:].count("incumbent")
    assert max(t.value for t in study.trials) > 24.5  # found near 9e-3 all the same


def test_sample_prior_draws_every_trial_from_the_prior():
    space = parse(BELIEVED, "p.yaml")
    sampler, study = run(space, lambda p: 20.0, 30, only_prior=True)
    assert {sampler.source_of(t.number) for t in study.trials} == {"prior"}
    assert np.mean([t.params["kl_anneal_type"] == "None" for t in study.trials]) > 0.75


def test_the_same_seed_draws_the_same_trials():
    space = parse(BELIEVED, "p.yaml")
    a = [t.params for t in run(space, lambda p: p["lr"] * 1e3, 12, seed=3)[1].trials]
    b = [t.params for t in run(space, lambda p: p["lr"] * 1e3, 12, seed=3)[1].trials]
    assert a == b
