"""The race's strategies: each gets its searcher, scheduler, knowledge (start points, prior, portfolio) and the same
budget; the single-run rows train one start point per seed."""
import pytest

from tune_cvae.bench import strategies
from tune_cvae.bench.settings import MORE_STRATEGIES, RACE_PORTFOLIO, SINGLE_RUNS, STRATEGY_NAMES
from tune_cvae.common import UserError
from tune_cvae.experiment.space_yaml import load_space, parse

SEARCHES = [n for n in STRATEGY_NAMES + MORE_STRATEGIES if n not in SINGLE_RUNS and "run_best" not in n and
            n not in ("pbt", "random+held")]


@pytest.mark.parametrize("name", SEARCHES)
def test_each_search_strategy_gets_its_searcher_scheduler_and_knowledge(name):
    space = strategies.with_portfolio(load_space("demo.yaml"), RACE_PORTFOLIO)
    parsed = parse(strategies.race_space(space, name, 32))
    parts = name.split("+")
    assert (parsed.searcher, parsed.scheduler, parsed.budget) == (parts[0], "asha" if "asha" in parts else "none", 32)
    assert bool(parsed.points_to_evaluate) == ("start" in parts)
    assert bool(parsed.portfolio) == ("portfolio" in parts)
    assert parsed.num_samples >= 32 and parsed.num_samples >= len(parsed.points_to_evaluate) + len(parsed.portfolio)
    if "bad-prior" in parts:  # the prior moved to the template's default at the floor of lr, believed strongly
        assert parsed.params["lr"]["prior"] == {"value": space.params["lr"]["low"], "confidence": "high"}
        assert parsed.params["output"]["prior"]["value"] == "residual"
    else:
        assert parsed.params == space.params


def test_the_demo_evaluates_no_portfolio_but_the_race_gives_its_portfolio_rows_the_shipped_one():
    """The race found the portfolio added nothing, so the default search (demo.yaml) runs without it; the race's
    portfolio rows still try demo_portfolio.yaml's configurations after the start points."""
    space = load_space("demo.yaml")
    assert space.portfolio == []
    with pytest.raises(UserError, match="demo.yaml: no portfolio for strategy random\\+start\\+portfolio"):
        strategies.race_space(space, "random+start+portfolio", 32)
    raced = parse(strategies.race_space(strategies.with_portfolio(space, RACE_PORTFOLIO), "random+start+portfolio", 32))
    assert len(raced.portfolio) == 4 and raced.points_to_evaluate == space.points_to_evaluate


def test_a_strategy_name_the_race_cannot_build_is_one_line():
    with pytest.raises(UserError, match="strategy 'bayes\\+asha': a searcher"):
        strategies.parts_of("bayes+asha")
    with pytest.raises(UserError, match="strategy 'tpe\\+hyperband'"):
        strategies.parts_of("tpe+hyperband")


def test_pbt_and_its_control_race_the_pbt_space_at_the_same_trial_epochs():
    pbt = parse(strategies.pbt_race_space(load_space("demo_pbt.yaml"), "pbt", 32))  # 4 trials x 8 epochs = 32
    assert (pbt.scheduler, pbt.num_samples, pbt.max_epochs, pbt.pbt["interval"]) == ("pbt", 4, 8, 2)
    held = parse(strategies.pbt_race_space(load_space("demo_pbt.yaml"), "random+held", 32))
    assert (held.scheduler, held.searcher, held.fixed, held.max_epochs) == ("none", "random", pbt.fixed, 8)


def test_the_single_runs_train_one_start_point_per_seed():
    space = load_space("demo.yaml")
    default = parse(strategies.one_run_space(space, "default config", 32, [0, 1, 2]))
    assert default.max_epochs == 32 and default.scheduler == "none" and default.num_samples == 3
    assert {**default.fixed, "seed": 0} == {**space.fixed, **space.points_to_evaluate[0], "seed": 0}
    alone = parse(strategies.one_run_space(space, "best start point alone", 40, [0, 1]))
    assert alone.max_epochs == 40  # the budget plus run_best's retraining epochs, as the race passes them
    assert {**alone.fixed, "seed": 0} == {**space.fixed, **space.points_to_evaluate[-1], **space.retrain["set"],
                                          "seed": 0}  # the best-known point, with run_best's recipe
