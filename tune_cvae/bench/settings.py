"""The benchmarks' fixed settings, each in one place and light to import: the command line's help texts are
written from them before torch loads.
"""

# `bench speed --model`: the template's sizes, or a smaller model for quick CPU figures
SPEED_MODELS = {"template": {}, "small": {"F_dim": 32, "L_dim": 16, "N_dim": 4, "D_out_dim": 48}}
# `bench search --model small`: the race's model, sized so that a race of many searches fits on 2 CPU cores
RACE_MODEL = {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16, "partial": 0.1}
RACE_QUICK = {"budget": 4, "max_epochs": 2, "seeds": 1, "train_frames": 400}  # `bench search --quick`: a test's run

# the race's strategies: searcher[+asha][+start] (race.race_space reads a name so), PBT over --pbt-space and its
# control random+held (the same space without exploits), and the default configuration alone
STRATEGY_NAMES = ("tpe+asha", "random+asha", "tpe", "random", "tpe+asha+start", "random+start", "pbt",
                  "random+held", "default config")


def describe(values):
    """'F_dim 32, L_dim 16, ...': a settings dict as a help text shows it."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
