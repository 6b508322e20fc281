"""The quality benchmark, `python -m tune_cvae bench quality [--seed 7] [--out DIR]`: on a built-in dataset of
another seed (data the spaces were never tuned on) run what `make demo` runs (the demo search, then run_best.py),
train the space's first point (the template's default configuration) for as many epochs as the search and the
retraining trained in all, and print one table of leaderboard scores (the scored frames of the 5 test videos):
the winner, the default configuration, and repeating the first frame.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

from tune_cvae.common import UserError, say
from tune_cvae.lab.config import UNSEEN_SEED

ROOT = Path(__file__).resolve().parent.parent.parent
DEMO_SPACE = "demo.yaml"  # what `make demo` searches; run_best.py retrains as its `retrain` says


def _run(args, log):
    """A project CLI as a subprocess (the search imports Ray; this module stays Ray-free); its output to `log`."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise UserError(f"{' '.join(args[:2])} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def train_default(space, dataset, epochs, out):
    """The space's first point (the template's default configuration) trained for `epochs`, its best epoch's
    weights scored like run_best's submission; returns (score dict, seconds)."""
    from tune_cvae.experiment.best import retrain
    from tune_cvae.lab.config import make_config
    from tune_cvae.lab.leaderboard import predict_tests, score, write_submission
    config = make_config({**space.trial_config(space.points_to_evaluate[0]), "num_epoch": epochs})
    t0 = time.perf_counter()
    _, run, _ = retrain(config, dataset, "cpu", 1)
    out.mkdir(parents=True, exist_ok=True)
    write_submission(out / "submission.csv", predict_tests(run, run.config["infer_z"], 1))
    return score(out / "submission.csv", Path(dataset.root) / "test_truth"), time.perf_counter() - t0


def quality(seed=UNSEEN_SEED, out="bench_quality", train_frames=None):
    """Runs what `make demo` runs on unseen data and the default configuration at equal epochs; the score table."""
    import pandas as pd
    from tune_cvae.experiment.space_yaml import load_space
    from tune_cvae.lab.config import BUILTIN_TRAIN_FRAMES
    from tune_cvae.lab.data import load_dataset
    from tune_cvae.lab.synthetic import generate
    out = Path(out).resolve()
    data_dir = out / f"data-seed{seed}"
    if not data_dir.is_dir():
        say(f"generating the built-in dataset with seed {seed} into {data_dir}")
        generate(data_dir, train_frames or BUILTIN_TRAIN_FRAMES, seed)
    exp = out / "ray_results" / "demo"
    if (exp / "best" / "summary.json").is_file():  # an earlier run's search and retraining: only the rest
        say(f"{exp}: reusing the finished search and run_best output (their durations are not measured again)")
        search_s = best_s = float("nan")
    else:
        if exp.exists():
            raise UserError(f"{exp}: an unfinished search is there; pass another --out")
        say("running the demo search (log: search.log)")
        search_s = _run(["run_search.py", "--space", DEMO_SPACE, "--data", str(data_dir), "--storage",
                         str(out / "ray_results"), "--name", "demo", "--no-dashboard"], out / "search.log")
        say(f"search took {search_s:.0f} s; running run_best.py (log: best.log)")
        best_s = _run(["run_best.py", "--experiment", str(exp)], out / "best.log")
    summary = json.loads((exp / "best" / "summary.json").read_text())
    epochs = int(pd.read_csv(exp / "trials.csv")["epochs"].sum()) + summary["epochs"]
    say(f"run_best took {best_s:.0f} s; training the default configuration for {epochs} epochs")
    default, default_s = train_default(load_space(DEMO_SPACE), load_dataset(data_dir, progress=False), epochs,
                                       out / "default")
    rows = [("winner (demo search + run_best)", summary["score"]["submission"], search_s + best_s),
            (f"default configuration, {epochs} epochs", default["submission"], default_s),
            ("repeat the first frame", default["repeat_first_frame"], 0.0)]
    table = pd.DataFrame([{"run": name, "score_dB": s["score"], "public_dB": s["public"],
                           "private_dB": s.get("private", float("nan")), "wall_s": t} for name, s, t in rows])
    table["vs_repeat_dB"] = table["score_dB"] - table["score_dB"].iloc[-1]
    (out / "quality.json").write_text(json.dumps({"seed": seed, "winner": summary, "default_epochs": epochs,
                                                  "table": table.to_dict("records")}, indent=2) + "\n")
    return table

def main(args):
    """`python -m tune_cvae bench quality` (flags: cli.bench_flags)."""
    table = quality(args.seed, args.out, args.train_frames)
    say(table.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep=""), result=True)
