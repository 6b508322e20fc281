"""The user's belief over a space: written priors, start points read as the prior, densities and draws in the unit
range."""
import math

import numpy as np
import pytest

from helpers import GOOD
from tune_cvae.experiment.prior import Belief, around, components, density, from_unit, truncnorm_pdf, unit
from tune_cvae.experiment.space_yaml import parse

LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}


def test_a_log_parameter_lives_on_a_log_unit_range():
    assert unit(LR, 1e-3) == pytest.approx(0.5) and from_unit(LR, 0.5) == pytest.approx(1e-3)
    cycle = {"type": "int", "low": 1, "high": 5}
    assert [from_unit(cycle, u) for u in (0.0, 0.3, 1.0)] == [1, 2, 5]


def test_a_truncated_normal_integrates_to_one_on_the_unit_range():
    grid = np.linspace(0, 1, 20001)
    for mean, std in ((0.5, 0.25), (0.0, 0.125), (1.0, 0.5)):
        assert np.trapezoid([truncnorm_pdf(u, mean, std) for u in grid], grid) == pytest.approx(1, rel=1e-3)


def test_a_confident_belief_draws_near_its_value_and_a_uniform_one_anywhere():
    rng = np.random.default_rng(0)
    sure = [Belief(LR, 3e-3, std=0.125).sample(rng) for _ in range(400)]
    assert np.median(np.abs(np.log10(sure) - math.log10(3e-3))) < 0.25
    assert 1e-4 <= min(sure) and max(sure) <= 1e-2
    anywhere = [Belief(LR).sample(rng) for _ in range(400)]
    assert np.mean(np.array(anywhere) < 1e-3) == pytest.approx(0.5, abs=0.08)  # half the log range below 1e-3
    kind = {"type": "categorical", "choices": ["a", "b", "c"]}
    drawn = [Belief(kind, "b", probability=0.8).sample(rng) for _ in range(1000)]
    assert drawn.count("b") / 1000 == pytest.approx(0.8, abs=0.04)
    assert Belief(kind, "b", probability=0.8).density("a") == pytest.approx(0.1)


def test_the_start_points_are_the_prior_where_none_is_written():
    raw = {**GOOD, "params": {**GOOD["params"], "lr": {**GOOD["params"]["lr"], "prior": {"value": 5e-3,
                                                                                          "confidence": "high"}}}}
    raw["points_to_evaluate"] = [GOOD["points_to_evaluate"][0], {"kl_anneal_type": "None", "lr": 1e-4}]
    mixture = components(parse(raw, "p.yaml"))
    assert len(mixture) == 2  # one component per start point
    assert [m["kl_anneal_type"].value for m in mixture] == ["Cyclical", "None"]
    assert [m["lr"].value for m in mixture] == [5e-3, 5e-3]  # the written prior wins over the points' values
    assert mixture[1]["kl_anneal_cycle"].value is None  # not in that point: uniform


def test_a_configuration_is_likelier_under_a_belief_centred_on_it():
    space = parse(GOOD, "p.yaml")
    near = {"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 2, "lr": 1e-3}
    far = {"kl_anneal_type": "None", "lr": 1e-2}
    mixture = components(space)
    assert density(mixture, near) > density(mixture, far)
    assert density([around(space, far)], far) > density([around(space, far)], near)
