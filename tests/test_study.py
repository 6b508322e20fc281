"""The Optuna side of a search: an earlier study's trials that lie in the space start a new one (--warm-start)."""
from pathlib import Path

import optuna
import pytest
import yaml

from tune_cvae.common import UserError
from tune_cvae.experiment.files import study_storage
from tune_cvae.experiment.space_yaml import parse
from tune_cvae.experiment.start import new_experiment
from tune_cvae.search import study

ROOT = Path(__file__).resolve().parent.parent


def smoke_space(**changes):
    raw = yaml.safe_load((ROOT / "search_spaces/smoke.yaml").read_text())
    return parse({**raw, **changes})


def _earlier_study(folder, distributions):
    folder.mkdir()
    earlier = optuna.create_study(study_name=folder.name, storage=study_storage(folder), direction="maximize")
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
    with pytest.raises(UserError, match=f"--warm-start {tmp_path}: not an experiment folder"):
        new_experiment("smoke.yaml", "/nowhere", "n", tmp_path / "rr", 0, warm_start=tmp_path)
