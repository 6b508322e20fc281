"""The user's belief over a search space, as distributions: where each parameter's good values are, and how sure
the user is. A space states it per parameter,

    lr:             {type: float, low: 1.0e-4, high: 5.0e-3, log: true, prior: {value: 3.0e-3, confidence: high}}
    kl_anneal_type: {type: categorical, choices: [Cyclical, Monotonic, None], prior: {value: None, probability: 0.8}}

and where a parameter has none, its values in the start points are the belief (one mixture component per point,
`confidence: medium`); a parameter in neither is believed uniform. Every parameter lives in the unit range here
(a log scale for `log: true`), where a number's belief is a normal truncated to [0, 1] around its value with a
standard deviation set by the confidence (as NePS does), and a categorical's is `probability` on the believed
choice and the rest shared by the others.
"""
import math

import numpy as np

CONFIDENCE_STD = {"low": 0.5, "medium": 0.25, "high": 0.125}  # a number's belief: the std in the unit range
CONFIDENCE_PROBABILITY = {"low": 0.5, "medium": 0.7, "high": 0.9}  # a categorical's: on the believed choice
PRIOR_KEYS = {"value", "confidence", "probability"}


def unit(p, value):
    """A parameter's value in the unit range [0, 1] (a categorical: its choice's index)."""
    if p["type"] == "categorical":
        return p["choices"].index(value)
    low, high, value = (math.log(v) if p.get("log") else v for v in (p["low"], p["high"], value))
    return 0.5 if high == low else (value - low) / (high - low)


def from_unit(p, u):
    """The parameter's value at `u` of its unit range (rounded for an int)."""
    low, high = (math.log(v) if p.get("log") else v for v in (p["low"], p["high"]))
    value = low + min(max(u, 0.0), 1.0) * (high - low)
    value = math.exp(value) if p.get("log") else value
    return min(max(int(round(value)), p["low"]), p["high"]) if p["type"] == "int" else value


def _phi(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def truncnorm_pdf(u, mean, std):
    """The density at u of a normal(mean, std) truncated to [0, 1]."""
    if not 0 <= u <= 1:
        return 0.0
    mass = _cdf((1 - mean) / std) - _cdf(-mean / std)
    return _phi((u - mean) / std) / std / max(mass, 1e-300)


def truncnorm_sample(rng, mean, std):
    """A draw of a normal(mean, std) truncated to [0, 1] (by rejection: the mean lies in [0, 1], so at least a
    sixth of the draws land there)."""
    while True:
        u = rng.normal(mean, std)
        if 0 <= u <= 1:
            return float(u)


class Belief:
    """One parameter's belief: around `value` with `std` (a number) or with `probability` on it (a categorical);
    value None: uniform."""

    def __init__(self, p, value=None, std=None, probability=None):
        self.p, self.value, self.std, self.probability = p, value, std, probability

    def sample(self, rng):
        p = self.p
        if p["type"] == "categorical":
            choices = p["choices"]
            if self.value is None or len(choices) == 1:
                return choices[rng.integers(len(choices))]
            others = [c for c in choices if c != self.value]
            return self.value if rng.random() < self.probability else others[rng.integers(len(others))]
        u = rng.random() if self.value is None else truncnorm_sample(rng, unit(p, self.value), self.std)
        return from_unit(p, u)

    def density(self, value):
        """The belief's density at `value` (a probability for a categorical), in the unit range."""
        p = self.p
        if p["type"] == "categorical":
            n = len(p["choices"])
            if self.value is None or n == 1:
                return 1.0 / n
            return self.probability if value == self.value else (1 - self.probability) / (n - 1)
        if self.value is None:
            return 1.0
        return truncnorm_pdf(unit(p, value), unit(p, self.value), self.std)


def written(p):
    """The belief a parameter's `prior:` states, or None where it states none."""
    prior = p.get("prior")
    if prior is None:
        return None
    if p["type"] == "categorical":
        probability = prior.get("probability", CONFIDENCE_PROBABILITY[prior.get("confidence", "medium")])
        return Belief(p, prior["value"], probability=probability)
    return Belief(p, prior["value"], std=CONFIDENCE_STD[prior.get("confidence", "medium")])


def components(space):
    """The prior as a mixture: one {parameter: Belief} per start point (a single one without start points), each
    parameter's written prior where it has one, else the point's value at medium confidence, else uniform."""
    points = space.points_to_evaluate or [{}]
    out = []
    for point in points:
        beliefs = {}
        for name, p in space.params.items():
            beliefs[name] = written(p) or (Belief(p) if name not in point else Belief(
                p, point[name], std=CONFIDENCE_STD["medium"], probability=CONFIDENCE_PROBABILITY["medium"]))
        out.append(beliefs)
    return out


def around(space, config, confidence="medium"):
    """A belief centred on one configuration (the incumbent), each of its values at `confidence`; the parameters
    it does not set are uniform."""
    std, probability = CONFIDENCE_STD[confidence], CONFIDENCE_PROBABILITY[confidence]
    return {name: Belief(p, config.get(name), std=std, probability=probability) for name, p in
            space.params.items()}


def density(mixture, config):
    """The mixture's density at a configuration: the mean over its components of the product of the densities
    of the parameters the configuration sets (a parameter its conditions left out counts no more)."""
    total = 0.0
    for beliefs in mixture:
        total += float(np.prod([beliefs[name].density(value) for name, value in config.items() if name in beliefs]))
    return total / len(mixture)
