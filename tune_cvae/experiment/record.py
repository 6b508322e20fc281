"""An experiment's search record (search.yaml): the space, the dataset folder, the seed, the trials' resources and
the warm start. Written once by run_search, read by everything after.
"""
from dataclasses import dataclass
from pathlib import Path

import yaml

from tune_cvae.common import UserError
from tune_cvae.experiment.files import SEARCH_FILE
from tune_cvae.experiment.space import Space
from tune_cvae.experiment.space_yaml import parse


@dataclass
class Search:
    """What an experiment folder's search.yaml records: written once by run_search, read by everything after."""
    space: Space
    data_dir: str
    seed: int
    resources: dict
    warm_start: str = None  # the experiment folder whose trials the study started with (--warm-start)


def write_search(exp_dir, search):
    raw = {"space_path": search.space.path, "space": search.space.to_dict(), "data": search.data_dir,
           "seed": search.seed, "resources": search.resources, "warm_start": search.warm_start}
    (Path(exp_dir) / SEARCH_FILE).write_text(yaml.safe_dump(raw, sort_keys=False))


def read_search(exp_dir):
    path = Path(exp_dir) / SEARCH_FILE
    if not path.is_file():
        raise UserError(f"{exp_dir}: not an experiment folder of run_search.py (no {SEARCH_FILE})")
    raw = yaml.safe_load(path.read_text())
    return Search(parse(raw["space"], raw["space_path"]), raw["data"], raw["seed"], raw["resources"],
                  raw.get("warm_start"))
