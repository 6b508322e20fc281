"""The race's datasets: each with its decoded videos, its test truth and the score of repeating the first frame
on it, and a cache of the test scores of the checkpoints it has rolled out."""
import hashlib
import json
from pathlib import Path

import numpy as np

from tune_cvae.bench.settings import RACE_DATA, RACE_QUICK
from tune_cvae.common import UserError, say, write_whole
from tune_cvae.lab.config import BUILTIN_TRAIN_FRAMES


class Data:
    """One dataset of the race: its name, its decoded videos, the test truth and repeating the first frame's
    score on it; test_score caches the scores of checkpoints whose weights it has rolled out before."""

    def __init__(self, name, root, out):
        from tune_cvae.lab.data import load_dataset
        from tune_cvae.lab.leaderboard import load_truth, score_arrays
        self.name, self.dataset = name, load_dataset(root, progress=False)
        truth_dir = Path(self.dataset.root) / "test_truth"
        if not truth_dir.is_dir():
            raise UserError(f"{root}: no test_truth/ folder: the race scores winners on the test videos")
        self.truth = load_truth(truth_dir, len(self.dataset.test_first))
        self.repeat = score_arrays(np.repeat(self.truth[:, :1], self.truth.shape[1], axis=1), self.truth)["score"]
        self.cache_file = out / f"test_scores-{name}.json"
        self.cache = json.loads(self.cache_file.read_text()) if self.cache_file.is_file() else {}

    def test_score(self, trial_dir, space):
        """The leaderboard's score of a trial's best checkpoint rolled out on the test videos."""
        from tune_cvae.experiment.winner import best_checkpoint
        from tune_cvae.lab.leaderboard import PIXELS, predict_tests, score_arrays, to_uint8
        from tune_cvae.lab.train import Run
        state = best_checkpoint(trial_dir, space.metric, space.mode)
        key = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state["model"].values())).hexdigest()[:24]
        key += f"-{state['config']['infer_z']}"
        if key not in self.cache:
            run = Run(state["config"], self.dataset)
            run.load_state(state)
            videos = to_uint8(predict_tests(run, run.config["infer_z"])).reshape(len(self.truth), -1, PIXELS)
            self.cache[key] = score_arrays(videos.numpy(), self.truth)["score"]
            write_whole(self.cache_file, json.dumps(self.cache))
        return self.cache[key]


def datasets(args, out):
    """The race's datasets: each --data folder, or the built-in datasets of RACE_DATA (generated under OUT)."""
    from tune_cvae.lab.synthetic import generate
    if args.data:
        return [Data(Path(d).name, Path(d).expanduser().resolve(), out) for d in args.data]
    found = []
    for name, spec in RACE_DATA.items():
        folder = out / f"data-{name}"
        if not folder.is_dir():
            frames = RACE_QUICK["train_frames"] if args.quick else spec.get("train_frames", BUILTIN_TRAIN_FRAMES)
            say(f"generating the built-in dataset {name} into {folder}")
            generate(folder, frames, spec["seed"], tempo=spec.get("tempo", 1.0))
        found.append(Data(name, folder, out))
        if args.quick:
            break  # one dataset is enough for a test
    return found
