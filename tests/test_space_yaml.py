"""Search-space files: every malformed space is refused with the file and key named, before Ray starts."""
import subprocess
import sys

import pytest
import yaml

from helpers import GOOD
from tune_cvae.experiment import space_yaml as spaces
from tune_cvae.experiment.space import SpaceError



def with_change(path, value):
    raw = yaml.safe_load(yaml.safe_dump(GOOD, sort_keys=False))
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return raw


def test_shipped_spaces_parse():
    for name in ("kl_tfr.yaml", "demo.yaml", "smoke"):
        space = spaces.load_space(name)
        assert space.num_samples >= 6 and space.params
    main = spaces.load_space("kl_tfr.yaml")
    assert main.points_to_evaluate[0]["kl_anneal_type"] == "Cyclical"  # the template's default goes first
    assert {"lr", "kl_reduction", "kl_beta_max", "tfr_d_step"} <= set(main.params)


@pytest.mark.parametrize("change, key", [
    (("colour", "red"), "colour"),
    (("params.lr.type", "gaussian"), "params.lr"),
    (("params.lr.low", 1.0), "low 1.0 > high 0.01"),
    (("params.kl_anneal_cycle.when", {"kl_type": "Cyclical"}), "params.kl_anneal_cycle.when.kl_type"),
    (("params", {}), "params: empty space"),
    (("metric", "val_ssim"), "metric: 'val_ssim' is not reported"),
    (("params.learning_rate", {"type": "float", "low": 0.1, "high": 0.2}), "params.learning_rate"),
    (("params.lr.step", 2), "params.lr.step"),
    (("fixed.F_dim", "big"), "fixed"),
    (("grace_period", 10), "grace_period"),
    (("points_to_evaluate", [{"kl_anneal_type": "Monotonic", "kl_anneal_cycle": 2, "lr": 1e-3}]),
     "points_to_evaluate[0].kl_anneal_cycle"),
    (("points_to_evaluate", [{"kl_anneal_type": "None", "lr": 1.0}]), "points_to_evaluate[0].lr"),
    (("params.kl_anneal_type.choices", ["Cyclical", "Sigmoid"]), "kl_anneal_type"),
    # a space that would hand trials configs that fail, or steer the search backwards
    (("mode", "min"), "mode: min with metric val_psnr"),
    (("metric", "loss"), "mode: max with metric loss: loss is better when lower"),
    (("params.N_dim", {"type": "int", "low": 4, "high": 8}), "params: a trial with N_dim=5 would fail"),
    (("params.D_out_dim", {"type": "categorical", "choices": [32, 60]}), "D_out_dim=60 would fail"),
    (("params.kl_anneal_cycle.when", {"kl_anneal_type": "Cyclic"}), "'Cyclic' is a value kl_anneal_type never"),
    (("num_samples", 0), "num_samples"),
    (("retrain", {"epochs": 0}), "retrain.epochs: must be an integer >= 1"),
    (("retrain", {"set": {"lr_scheduler": "sometimes"}}), "retrain.set.lr_scheduler"),
    (("retrain", {"seeds": 2}), "retrain: must be a mapping with epochs and/or set"),
    # a prior or a portfolio that cannot be what the user meant
    (("params.lr.prior", {"value": 1.0}), "params.lr.prior.value: 1.0 is outside [0.0001, 0.01]"),
    (("params.lr.prior", {"value": 1e-3, "confidence": "sure"}), "params.lr.prior.confidence: must be low, medium"),
    (("params.lr.prior", 1e-3), "params.lr.prior: must be a mapping with value"),
    (("params.lr.prior", {"value": 1e-3, "probability": 0.5}), "params.lr.prior.probability: a number's belief"),
    (("params.lr.prior", {"value": 1e-3, "centre": 1e-3}), "params.lr.prior.centre: unknown key"),
    (("params.kl_anneal_type.prior", {"value": "Sigmoid"}), "params.kl_anneal_type.prior.value: 'Sigmoid' is not"),
    (("params.kl_anneal_type.prior", {"value": "None", "probability": 1.5}),
     "params.kl_anneal_type.prior.probability: must be a number in (0, 1]"),
    (("portfolio", "nope.yaml"), "portfolio: nope.yaml: no such file"),
    (("portfolio", [{"kl_anneal_type": "None", "lr": 1.0}]), "portfolio[0].lr: 1.0 is outside"),
    (("searcher", "bayes"), "searcher: must be one of tpe, random, prior, sample-prior"),
])
def test_malformed_space_names_the_key(change, key):
    with pytest.raises(SpaceError, match=None) as exc:
        spaces.parse(with_change(*change), "bad.yaml")
    assert str(exc.value).startswith("bad.yaml: ") and key in str(exc.value)


def test_more_start_points_than_trials_is_refused():
    raw = with_change("num_samples", 1)
    raw["points_to_evaluate"] *= 2
    with pytest.raises(SpaceError, match="bad.yaml: points_to_evaluate: 2 points but num_samples is 1"):
        spaces.parse(raw, "bad.yaml")


def test_a_portfolio_file_is_read_beside_the_space_and_recorded_whole(tmp_path):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"portfolio": [{"kl_anneal_type": "None", "lr": 2e-3}]}))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({**GOOD, "portfolio": "mine.yaml"}, sort_keys=False))
    space = spaces.load_space(str(tmp_path / "space.yaml"))
    assert space.portfolio == [{"kl_anneal_type": "None", "lr": 2e-3}]
    assert space.portfolio_file == str(tmp_path / "mine.yaml")
    again = spaces.parse(space.to_dict(), "search.yaml")  # what an experiment's search.yaml gives back
    assert again.portfolio == space.portfolio and again.portfolio_file == space.portfolio_file
    (tmp_path / "mine.yaml").write_text("portfolio: not a list\n")
    with pytest.raises(SpaceError, match="portfolio: .*mine.yaml holds no `portfolio:` list"):
        spaces.load_space(str(tmp_path / "space.yaml"))


def test_model_sizes_that_fit_together_pass():
    raw = with_change("params.N_dim", {"type": "categorical", "choices": [4, 8]})
    raw["fixed"].update(L_dim=8, D_out_dim=32)
    raw["params"]["F_dim"] = {"type": "categorical", "choices": [32, 64]}
    del raw["fixed"]["F_dim"]
    del raw["points_to_evaluate"]
    assert spaces.parse(raw, "ok.yaml").params["N_dim"]["choices"] == [4, 8]


def test_cli_refuses_bad_space_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_change("params.lr.low", 1.0), sort_keys=False))
    proc = subprocess.run([sys.executable, "run_search.py", "--space", str(bad), "--storage", str(tmp_path / "rr")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {bad}: params.lr: low 1.0 > high 0.01"]
    assert not (tmp_path / "rr").exists()


def test_unknown_space_name_lists_the_builtin_ones():
    with pytest.raises(SpaceError, match="kl_tfr.yaml"):
        spaces.load_space("no_such_space")
