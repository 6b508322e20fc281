"""The checks of a space's parameters and of the values given for them (start points, a portfolio): every value
a parameter can take passes the run's config rules, a prior lies in its range, a point sets each parameter its
conditions switch on. Each problem is a SpaceError naming the file and the key.
"""
import itertools

from tune_cvae.experiment.prior import CONFIDENCE_PROBABILITY, CONFIDENCE_STD, PRIOR_KEYS
from tune_cvae.experiment.space import SpaceError
from tune_cvae.lab.config import DEFAULTS, MODEL_SIZES, OPTIONS, ConfigError, make_config

PARAM_KEYS = {"float": {"type", "low", "high", "log", "when", "prior"},
              "int": {"type", "low", "high", "log", "when", "prior"},
              "categorical": {"type", "choices", "when", "prior"}}


def need(cond, path, key, msg):
    """A SpaceError 'PATH: KEY: MSG' unless `cond`."""
    if not cond:
        raise SpaceError(f"{path}: {key}: {msg}")


def check_param(path, name, p, params, fixed):
    key = f"params.{name}"
    need(name in OPTIONS and name != "num_epoch", path, key, "not a config key the training run knows")
    need(name not in fixed, path, key, "also given in fixed")
    need(isinstance(p, dict) and p.get("type") in PARAM_KEYS, path, key,
          "needs type: float, int or categorical")
    for k in p:
        need(k in PARAM_KEYS[p["type"]], path, f"{key}.{k}", f"unknown key for a {p['type']} parameter")
    if p["type"] == "categorical":
        need(isinstance(p.get("choices"), list) and p["choices"], path, f"{key}.choices", "needs a non-empty list")
    else:
        number = (int,) if p["type"] == "int" else (int, float)
        for bound in ("low", "high"):
            need(isinstance(p.get(bound), number) and not isinstance(p.get(bound), bool), path, f"{key}.{bound}",
                  f"needs a number for a {p['type']} parameter, got {p.get(bound)!r}")
        need(p["low"] <= p["high"], path, key, f"low {p['low']} > high {p['high']}")
        need(not p.get("log") or p["low"] > 0, path, f"{key}.log", "a log scale needs low > 0")
    if "prior" in p:
        check_prior(path, key, p)
    when = p.get("when", {})
    need(isinstance(when, dict), path, f"{key}.when", "must map parameter names to values")
    earlier = list(params)[:list(params).index(name)]
    for other, allowed in when.items():
        need(other in earlier, path, f"{key}.when.{other}",
              "condition on an unknown parameter (it must be a parameter listed before this one)")
        parent = params[other]
        for value in allowed if isinstance(allowed, list) else [allowed]:
            can = value in parent["choices"] if parent["type"] == "categorical" else \
                isinstance(value, (int, float)) and parent["low"] <= value <= parent["high"]
            need(can, path, f"{key}.when.{other}", f"{value!r} is a value {other} never takes, so {name} would "
                  f"never be searched")


def check_prior(path, key, p):
    """`prior: {value, confidence: low|medium|high}` (a categorical may give `probability` on its value instead)."""
    prior, key = p["prior"], f"{key}.prior"
    need(isinstance(prior, dict) and "value" in prior, path, key, "must be a mapping with value and confidence "
          "(or probability, for a categorical)")
    for k in prior:
        need(k in PRIOR_KEYS, path, f"{key}.{k}", f"unknown key (known: {', '.join(sorted(PRIOR_KEYS))})")
    value = prior["value"]
    if p["type"] == "categorical":
        need(value in p["choices"], path, f"{key}.value", f"{value!r} is not one of {p['choices']}")
        q = prior.get("probability")
        need(q is None or (isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q <= 1), path,
              f"{key}.probability", f"must be a number in (0, 1], got {q!r}")
        need(q is None or "confidence" not in prior, path, key, "give confidence or probability, not both")
    else:
        need(isinstance(value, (int, float)) and not isinstance(value, bool) and p["low"] <= value <= p["high"],
              path, f"{key}.value", f"{value!r} is outside [{p['low']}, {p['high']}]")
        need("probability" not in prior, path, f"{key}.probability", "a number's belief takes a confidence")
    confidence = prior.get("confidence", "medium")
    need(confidence in CONFIDENCE_STD and confidence in CONFIDENCE_PROBABILITY, path, f"{key}.confidence",
          f"must be low, medium or high, got {confidence!r}")


def values(name, p):
    """The values of a parameter that the config rules must accept: every choice; the ends of a number range
    (those rules are bounds), except every integer of a model size's range (a divisibility rule spans them);
    a conditional model size can also keep its default."""
    if p["type"] == "categorical":
        values = list(p["choices"])
    elif name in MODEL_SIZES and p["type"] == "int":
        values = range(p["low"], p["high"] + 1)
    else:
        values = [p["low"], p["high"]]
    return [*values, DEFAULTS[name]] if name in MODEL_SIZES and "when" in p else values


def check_every_value(path, params, base):
    """Every value each parameter can take, beside the fixed values, passes make_config; the searched model sizes
    in every combination. A space that passes cannot hand a trial a config that fails."""
    sizes = [n for n in params if n in MODEL_SIZES]
    for combo in itertools.product(*(values(n, params[n]) for n in sizes)):
        try:
            make_config({**base, **dict(zip(sizes, combo))})
        except ConfigError as e:
            shown = ", ".join(f"{n}={v}" for n, v in zip(sizes, combo))
            raise SpaceError(f"{path}: params: a trial with {shown} would fail: {e}") from None
    base = {**base, **{n: values(n, params[n])[0] for n in sizes}}
    for name, p in params.items():
        if name in MODEL_SIZES:
            continue
        for value in values(name, p):
            try:
                make_config({**base, name: value})
            except ConfigError as e:
                raise SpaceError(f"{path}: params.{name}: {e}") from None


def check_point(space, point, key):
    need(isinstance(point, dict), space.path, key, "must be a mapping of parameter values")
    values = {}
    for name, p in space.params.items():
        if not space.active(name, values):
            need(name not in point, space.path, f"{key}.{name}", "given although its condition excludes it")
            continue
        need(name in point, space.path, f"{key}.{name}", "missing (every active parameter needs a value)")
        value = point[name]
        if p["type"] == "categorical":
            need(value in p["choices"], space.path, f"{key}.{name}", f"{value!r} is not one of {p['choices']}")
        else:
            need(isinstance(value, (int, float)) and p["low"] <= value <= p["high"], space.path, f"{key}.{name}",
                  f"{value!r} is outside [{p['low']}, {p['high']}]")
        values[name] = value
    for name in point:
        need(name in space.params, space.path, f"{key}.{name}", "not a parameter of this space")
    return values
