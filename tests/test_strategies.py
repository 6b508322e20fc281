"""The race's strategies: each gets its searcher, scheduler, start points and the same budget."""
from tune_cvae.bench import strategies
from tune_cvae.bench.settings import STRATEGY_NAMES
from tune_cvae.experiment.space_yaml import load_space, parse


def test_the_race_gives_each_strategy_its_searcher_scheduler_and_start_points():
    space = load_space("demo.yaml")
    for name in STRATEGY_NAMES[:-3]:
        raw = strategies.race_space(space, name, 32)
        parsed = parse(raw)
        assert (parsed.searcher, parsed.scheduler, parsed.budget) == (
            name.split("+")[0], "asha" if "asha" in name else "none", 32)
        assert bool(parsed.points_to_evaluate) == name.endswith("+start")
    pbt = parse(strategies.pbt_race_space(load_space("demo_pbt.yaml"), "pbt", 32))  # 4 trials x 8 epochs = 32
    assert (pbt.scheduler, pbt.num_samples, pbt.max_epochs, pbt.pbt["interval"]) == ("pbt", 4, 8, 2)
    held = parse(strategies.pbt_race_space(load_space("demo_pbt.yaml"), "random+held", 32))
    assert (held.scheduler, held.searcher, held.fixed, held.max_epochs) == ("none", "random", pbt.fixed, 8)
    default = parse(strategies.default_space(space, 32, [0, 1, 2]))
    assert default.max_epochs == 32 and default.scheduler == "none" and default.num_samples == 3
    assert {**default.fixed, "seed": 0} == {**space.fixed, **space.points_to_evaluate[0], "seed": 0}
