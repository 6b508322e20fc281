"""A YAML search space read and checked completely: any problem is a SpaceError naming the file and the key, before
Ray starts (a space that passes cannot hand a trial a config that fails). The format: space.py.
"""
from pathlib import Path

import yaml

from tune_cvae.experiment.space import PBT, PBT_FIXED, PBT_SCHEDULE_KEYS, SCHEDULERS, SEARCHERS, Space, SpaceError
from tune_cvae.experiment.space_params import check_every_value, check_param, check_point, need
from tune_cvae.experiment.wandb_log import SETTINGS_KEYS
from tune_cvae.lab.config import METRICS, MODEL_SIZES, SETTABLE, ConfigError, make_config

SPACES_DIR = Path(__file__).resolve().parent.parent.parent / "search_spaces"
TOP_KEYS = {"metric", "mode", "num_samples", "max_epochs", "grace_period", "reduction_factor", "fixed", "params",
            "points_to_evaluate", "retrain", "description", "searcher", "scheduler", "budget", "pbt", "portfolio",
            "portfolio_file", "wandb"}
PBT_KEYS = {"interval", "quantile", "resample_probability", "mutate"}


def resolve(name_or_path):
    """--space takes a file name in search_spaces/ (with or without .yaml) or a path."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    for candidate in (SPACES_DIR / name_or_path, SPACES_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.name for p in SPACES_DIR.glob("*.yaml")))
    raise SpaceError(f"{name_or_path}: no such space file (built-in spaces: {known})")


def load_space(name_or_path):
    path = resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse(raw, str(path))


def _int(raw, path, key, default=None, low=1):
    value = raw.get(key, default)
    need(isinstance(value, int) and not isinstance(value, bool) and value >= low, path, key,
          f"must be an integer >= {low}, got {value!r}")
    return value


def parse(raw, path="<space>"):
    """Check a space dict completely; any problem is a SpaceError naming the file and the key."""
    need(isinstance(raw, dict), path, "(top level)", "must be a mapping")
    for key in raw:
        need(key in TOP_KEYS, path, key, f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
    metric = raw.get("metric", "val_psnr")
    need(metric in METRICS, path, "metric", f"{metric!r} is not reported by the trainable "
          f"(reported: {', '.join(METRICS)})")
    mode = raw.get("mode", METRICS[metric])
    need(mode in ("max", "min"), path, "mode", f"must be max or min, got {mode!r}")
    need(mode == METRICS[metric], path, "mode", f"{mode} with metric {metric}: {metric} is better when "
          f"{'higher' if METRICS[metric] == 'max' else 'lower'}; write mode: {METRICS[metric]} or leave mode out")
    max_epochs = _int(raw, path, "max_epochs")
    grace = _int(raw, path, "grace_period", 1)
    need(grace <= max_epochs, path, "grace_period", f"{grace} is more than max_epochs {max_epochs}")
    fixed = raw.get("fixed") or {}
    need(isinstance(fixed, dict), path, "fixed", "must be a mapping of config keys to values")
    params = raw.get("params") or {}
    need(isinstance(params, dict) and params, path, "params", "empty space: name at least one parameter")
    strategy = _strategy(raw, path)
    if strategy["pbt"]:
        fixed = _pbt_fixed(path, fixed, params, strategy["pbt"]["mutate"], strategy["scheduler"] in PBT)
    for name in fixed:
        need(name != "num_epoch", path, f"fixed.{name}", "set max_epochs instead")
    try:
        make_config({**fixed, "num_epoch": max_epochs})
    except ConfigError as e:
        if not any(n in params for n in MODEL_SIZES):  # else the sizes are checked with the searched ones below
            raise SpaceError(f"{path}: fixed: {e}") from None
    for name, p in params.items():
        check_param(path, name, p, params, fixed)
    check_every_value(path, params, {**fixed, "num_epoch": max_epochs})
    space = Space(path, metric, mode, _int(raw, path, "num_samples"), max_epochs, grace,
                  _int(raw, path, "reduction_factor", 3, low=2), fixed, params,
                  retrain=_check_retrain(path, raw.get("retrain") or {}, fixed), wandb=_check_wandb(path, raw),
                  **strategy)
    _start_points(space, raw)
    return space


def _start_points(space, raw):
    """points_to_evaluate, then the portfolio (a file of configurations from earlier searches, or its list as
    search.yaml records it), each checked like a trial's values; all of them evaluated first."""
    path, points = space.path, raw.get("points_to_evaluate") or []
    need(isinstance(points, list), path, "points_to_evaluate", "must be a list of mappings")
    for i, point in enumerate(points):
        space.points_to_evaluate.append(check_point(space, point, f"points_to_evaluate[{i}]"))
    portfolio, where = raw.get("portfolio") or [], "portfolio"
    if isinstance(portfolio, str):
        space.portfolio_file = str(_portfolio_file(path, portfolio))
        portfolio, where = _read_portfolio(path, space.portfolio_file), f"portfolio ({space.portfolio_file})"
    else:
        space.portfolio_file = raw.get("portfolio_file")
    need(isinstance(portfolio, list), path, "portfolio", "must name a portfolio file or list configurations")
    for i, point in enumerate(portfolio):
        space.portfolio.append(check_point(space, point, f"{where}[{i}]"))
    first = len(space.points_to_evaluate) + len(space.portfolio)
    need(first <= space.num_samples, path, "points_to_evaluate", f"{first} points"
          f"{' with the portfolio' if space.portfolio else ''} but num_samples is {space.num_samples}: the search "
          f"would never reach the last ones")


def _portfolio_file(path, name):
    """A space's `portfolio:` file: beside the space file, else in search_spaces/."""
    for candidate in (Path(path).parent / name, SPACES_DIR / name, Path(name).expanduser()):
        if candidate.is_file():
            return candidate.resolve()
    raise SpaceError(f"{path}: portfolio: {name}: no such file (beside the space or in {SPACES_DIR})")


def _read_portfolio(path, file):
    """The configurations of a portfolio file (`python -m tune_cvae portfolio` writes them under `portfolio:`)."""
    try:
        raw = yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SpaceError(f"{path}: portfolio: {file}: cannot be read ({str(e).splitlines()[0]})") from None
    need(isinstance(raw, dict) and isinstance(raw.get("portfolio"), list), path, "portfolio",
          f"{file} holds no `portfolio:` list of configurations")
    return raw["portfolio"]


def _strategy(raw, path):
    """searcher, scheduler, budget and PBT's settings: how the search proposes trials, stops (or, under PBT,
    exploits) them, and when it ends."""
    scheduler = raw.get("scheduler", "asha")
    need(scheduler in SCHEDULERS, path, "scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    searcher = raw.get("searcher", "random" if scheduler in PBT else "tpe")
    need(searcher in SEARCHERS, path, "searcher", f"must be one of {', '.join(SEARCHERS)}, got {searcher!r}")
    budget = _int(raw, path, "budget") if raw.get("budget") is not None else None
    pbt = _check_pbt(raw, path) if raw.get("pbt") is not None or scheduler in PBT else None
    if scheduler in PBT:
        need(searcher == "random", path, "searcher", f"scheduler {scheduler} draws its population at random (Ray's "
              f"PBT takes no searcher): write searcher: random or leave it out (and no --searcher {searcher})")
        need(budget is None, path, "budget", f"scheduler {scheduler} trains its num_samples trials max_epochs each; "
              f"set those instead of a budget")
    return {"searcher": searcher, "scheduler": scheduler, "budget": budget, "pbt": pbt}


def _check_pbt(raw, path):
    """`pbt: {interval, quantile, resample_probability, mutate}`, checked and with its defaults."""
    settings = raw.get("pbt") or {}
    need(isinstance(settings, dict), path, "pbt", f"must be a mapping with {', '.join(sorted(PBT_KEYS))}")
    for key in settings:
        need(key in PBT_KEYS, path, f"pbt.{key}", f"unknown key (known: {', '.join(sorted(PBT_KEYS))})")
    interval = _int({"pbt.interval": settings.get("interval", 2)}, path, "pbt.interval")
    need(interval <= raw.get("max_epochs", 0), path, "pbt.interval", f"{interval} epochs: more than max_epochs")
    out = {"interval": interval, "mutate": settings.get("mutate", list(SETTABLE))}
    for key, default, high in (("quantile", 0.25, 0.5), ("resample_probability", 0.25, 1.0)):
        value = settings.get(key, default)
        need(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= high
              and (value > 0 or key != "quantile"), path, f"pbt.{key}", f"must be a number in (0, {high}], "
              f"got {value!r}")
        out[key] = float(value)
    need(isinstance(out["mutate"], list) and out["mutate"], path, "pbt.mutate", "must be a non-empty list")
    return out


def _pbt_fixed(path, fixed, params, mutate, active):
    """The fixed values with PBT_FIXED added: the mutated parameters must be searched float ranges among
    kl_beta_max, tfr and lr, and nothing else may schedule them."""
    for name in mutate:
        need(name in SETTABLE, path, "pbt.mutate", f"{name!r}: PBT changes kl_beta_max, tfr "
              f"and lr (the values a trial holds between epochs)")
        need(params.get(name, {}).get("type") == "float", path, "pbt.mutate",
              f"{name!r} must be a float parameter under params (its range bounds PBT's changes), as in "
              f"demo_pbt.yaml and kl_tfr_pbt.yaml")
    if not active:
        return fixed
    for name, p in params.items():
        need(name not in PBT_SCHEDULE_KEYS, path, f"params.{name}", "under PBT the KL weight, teacher-forcing "
              "ratio and lr are held and changed by PBT (kl_beta_max, tfr, lr): leave their schedules out")
        need(not isinstance(p, dict) or "when" not in p, path, f"params.{name}.when",
              "PBT draws its population at random, without conditions")
        need(not isinstance(p, dict) or "prior" not in p, path, f"params.{name}.prior",
              "PBT draws its population at random, not from a prior")
    for name, value in fixed.items():
        need(name not in PBT_SCHEDULE_KEYS or PBT_FIXED.get(name) == value, path, f"fixed.{name}",
              f"under PBT it is {PBT_FIXED.get(name, 'unused')} (PBT changes kl_beta_max, tfr and lr itself)")
    return {**fixed, **PBT_FIXED}


def _check_wandb(path, raw):
    """`wandb: {project, entity, group, tags}`: where the trials' W&B runs go (None: no W&B)."""
    settings = raw.get("wandb")
    if settings is None:
        return None
    need(isinstance(settings, dict) and isinstance(settings.get("project"), str) and settings["project"], path,
         "wandb", "must be a mapping with a project (and entity, group, tags)")
    for key, value in settings.items():
        need(key in SETTINGS_KEYS, path, f"wandb.{key}", f"unknown key (known: {', '.join(SETTINGS_KEYS)})")
        need(value is None or (isinstance(value, list) and all(isinstance(t, str) for t in value)
                               if key == "tags" else isinstance(value, str)), path, f"wandb.{key}",
             "must be a list of words" if key == "tags" else "must be text")
    return dict(settings)


def _check_retrain(path, retrain, fixed):
    """`retrain: {epochs: N, set: {KEY: VALUE}}`: how run_best.py retrains this space's winner unless its flags say
    otherwise (--epochs, --set)."""
    need(isinstance(retrain, dict) and set(retrain) <= {"epochs", "set"}, path, "retrain",
          "must be a mapping with epochs and/or set")
    epochs = retrain.get("epochs", 1)
    need(isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1, path, "retrain.epochs",
          f"must be an integer >= 1, got {epochs!r}")
    changes = retrain.get("set", {})
    need(isinstance(changes, dict), path, "retrain.set", "must map config keys to values")
    for key, value in changes.items():
        try:
            make_config({key: value})
        except ConfigError as e:
            raise SpaceError(f"{path}: retrain.set.{key}: {e}") from None
    return retrain


