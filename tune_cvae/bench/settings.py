"""The benchmarks' fixed settings, each in one place and light to import: the command line's help texts are
written from them before torch loads.
"""

# `bench speed --model`: the template's sizes, or a smaller model for quick CPU figures
SPEED_MODELS = {"template": {}, "small": {"F_dim": 32, "L_dim": 16, "N_dim": 4, "D_out_dim": 48}}
# `bench search --model small`: the race's model, sized so that a race of hundreds of searches runs on 2 CPU cores:
# 10 % of the training list per epoch (5 % left the searches' winners below repeating the first frame) and the first
# 200 frames of the validation video (a 630-frame rollout was half of each epoch; 200 frames ranked 24 checkpoints
# by their test score almost as well: Spearman 0.82 against 0.84, 64 frames 0.74; the test score rolls out all)
RACE_MODEL = {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16, "partial": 0.1, "val_frames": 200}
RACE_QUICK = {"budgets": [4], "max_epochs": 2, "seeds": 1, "train_frames": 400}  # `bench search --quick`: a test's
# `bench search --train-seeds K` (default TRAIN_SEEDS): every trial of a search trains with the search's own seed,
# and each winner's values are trained afresh with seeds RESCORE_SEEDS_FROM.. (the same for every row, so a
# configuration two rows both chose scores the same) and scored as the mean: one configuration's test score spans
# 3.6 dB over 10 training seeds (docs/QUALITY.md), more than any difference between strategies
TRAIN_SEEDS, RESCORE_SEEDS_FROM = 3, 100
# the race's datasets by default: built-in data the spaces and the portfolio were not tuned on, the second
# differing in more than the seed (dancers half as fast again, two thirds of the training frames)
RACE_DATA = {"seed7": {"seed": 7}, "seed11-tempo1.5": {"seed": 11, "tempo": 1.5, "train_frames": 1600}}

# the race's strategies (bench/strategies.py reads the names): the default (what the spaces run, which the race
# kept: docs/QUALITY.md), the candidate that was raced to replace it, and their controls with the same knowledge;
# then the older rows, which race on request
DEFAULT = "tpe+asha+start"
CANDIDATE = "prior+asha+start+portfolio"  # the prior-guided sampler with the start points and the portfolio first
RUN_BEST = f"{DEFAULT} + run_best"  # the default's winner retrained by run_best.py, as `make demo` does
ONE_RUN = "best start point alone"  # the user's alternative: the best-known start point for the same compute
SINGLE_RUNS = ("default config", ONE_RUN)  # rows that train one configuration per seed, not searches
PBT_ROWS = ("pbt", "random+held")  # the rows that race the PBT space
STRATEGY_NAMES = (DEFAULT, CANDIDATE, "prior+asha+start", "random+start", "sample-prior+start",
                  "random+start+portfolio", "prior+asha+bad-prior", "random", RUN_BEST, ONE_RUN)
MORE_STRATEGIES = ("tpe+asha", "random+asha", "tpe", "pbt", "random+held", "default config")
# the portfolio rows' configurations where the race's space names none (no space names one by default: the race
# found it added nothing); built from searches on built-in data of seeds 1-3
RACE_PORTFOLIO = "demo_portfolio.yaml"
# (row, control): each comparison the race reports, paired by dataset and seed (a control with the same
# knowledge, or the default where a row could replace it)
CONTROLS = ((DEFAULT, "random+start"), (CANDIDATE, DEFAULT), (CANDIDATE, "random+start"),
            (CANDIDATE, "sample-prior+start"), (CANDIDATE, "random+start+portfolio"), (CANDIDATE, "prior+asha+start"),
            ("prior+asha+start", "random+start"), ("prior+asha+start", "sample-prior+start"),
            ("sample-prior+start", "random+start"), ("sample-prior+start", DEFAULT),  # the prior's draws, the default
            ("prior+asha+bad-prior", "random"), (RUN_BEST, ONE_RUN))


def describe(values):
    """'F_dim 32, L_dim 16, ...': a settings dict as a help text shows it."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
