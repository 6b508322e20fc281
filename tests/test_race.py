"""The strategy race (`bench search`): each strategy's space, the summary's reach, the quick race end to end."""
import math

import pandas as pd
import pytest
import yaml

from tune_cvae import cli
from tune_cvae.bench import race
from tune_cvae.bench.settings import STRATEGY_NAMES


def test_reach_and_the_summary_count_trial_epochs_to_the_baselines_best():
    runs = [({"strategy": "random", "seed": s, "best_val_psnr": v, "test_score": v - 1, "trial_epochs": 4,
              "trials": 1, "diverged": 0, "wall_s": 1.0}, curve) for s, (v, curve) in
            enumerate([(20.0, [15.0, 20.0, 20.0, 20.0]), (22.0, [math.nan, 18.0, 22.0, 22.0])])]
    runs.append(({**runs[0][0], "strategy": "tpe+asha", "best_val_psnr": 25.0}, [21.0, 25.0, 25.0, 25.0]))
    table, summary = race.summarise(runs, "val_psnr", "max")
    assert summary.attrs["target"] == 21.0
    tpe = summary.set_index("strategy").loc["tpe+asha"]
    assert tpe["epochs to baseline's best"] == 1 and tpe["reached"] == "1/1"
    assert summary.set_index("strategy").loc["random"]["reached"] == "1/2"
    assert math.isnan(race.reach([math.nan, 18.0], 21.0, "max")) and race.reach([19.0, 22.0], 21.0, "max") == 2


@pytest.mark.slow
def test_the_quick_race_runs_every_strategy_and_run_best_works_on_each(ray_cluster, builtin_root, tmp_path):
    from tune_cvae.experiment.best import run_best
    args = cli.parser().parse_args(["bench", "search", "--quick", "--data", str(builtin_root), "--out",
                                    str(tmp_path / "race")])
    summary = race.race(args)
    assert list(summary["strategy"]) == list(STRATEGY_NAMES)
    table = pd.read_csv(tmp_path / "race" / "searches.csv")
    searches = table[table["strategy"] != "default config"]
    assert (searches["trial_epochs"] >= 4).all() and (searches["trial_epochs"] <= 4 + 1).all()  # 2 trials at a time
    assert table["test_score"].notna().all() and (tmp_path / "race" / "race.png").stat().st_size > 0
    assert "| strategy |" in (tmp_path / "race" / "summary.md").read_text()
    for exp in sorted((tmp_path / "race" / "ray_results").iterdir()):
        strategy = yaml.safe_load((exp / "search.yaml").read_text())["space"]
        assert (exp / "trials.csv").is_file() and (exp / "report" / "index.html").is_file(), exp
        first = (exp / "report" / "index.md").read_text().splitlines()[2]
        assert ("Population Based Training" if strategy["scheduler"] == "pbt" else
                "random sampling" if strategy["searcher"] == "random" else "TPE") in first, first
        assert ("ASHA" in first) == (strategy["scheduler"] == "asha"), first
        out, summary = run_best(experiment=exp, epochs=1, from_checkpoint=True, out=exp / "best")
        assert (out / "submission.csv").is_file() and "score" in summary, (exp, strategy["searcher"])
