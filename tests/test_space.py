"""A search space's define-by-run function: a conditional parameter is suggested only when its condition holds."""
import optuna

from helpers import GOOD
from tune_cvae.experiment.space import DefineByRun
from tune_cvae.experiment.space_yaml import parse


def test_conditional_parameter_only_when_its_condition_holds():
    space = parse(GOOD, "good.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        constants = DefineByRun(space)(trial)
        assert constants == {"F_dim": 32, "num_epoch": 6}
        assert ("kl_anneal_cycle" in trial.params) == (trial.params["kl_anneal_type"] == "Cyclical")
        seen.add(trial.params["kl_anneal_type"])
        study.tell(trial, 1.0)
    assert seen == {"Cyclical", "Monotonic", "None"}
