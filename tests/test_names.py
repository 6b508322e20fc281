"""Names derived from a trial's values (its TensorBoard run folder, its Ray actor) fit any file system; the Ray
internals that those names and a search's endings lean on are still there."""
import importlib
import logging
import signal

import numpy as np
import pytest
from ray import tune
from ray.tune.trainable.function_trainable import wrap_function

from tune_cvae.experiment.space import LABEL_BYTES, label, short
from tune_cvae.search import tuner
from tune_cvae.search.trainable import named_trial

LONG = {"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 10, "kl_anneal_ratio": 0.987, "kl_reduction": "sum_batch",
        "kl_beta_max": 0.000123, "tfr": 0.5, "tfr_sde": 10, "tfr_d_step": 0.123, "optim": "AdamW",
        "weight_decay": 0.000123, "lr": 0.000123, "lr_scheduler": "multistep_scaled", "optim_step": "frame",
        "output": "residual", "output_activation": "sigmoid"}


def test_a_long_label_keeps_the_id_and_the_values_that_fit_then_says_it_was_cut():
    text = label("b63aaa53", LONG)
    assert len(text.encode()) <= LABEL_BYTES
    assert text.startswith("b63aaa53 kl_anneal_type=Cyclical kl_anneal_cycle=10 kl_anneal_ratio=0.987")
    shown = text.split()[1:-1]
    assert text.endswith(" ...") and shown == [f"{k}={short(v)}" for k, v in LONG.items()][:len(shown)]


def test_a_short_label_is_complete():
    assert label("a1", {"lr": 0.00123456, "optim": "Adam"}) == "a1 lr=0.00123 optim=Adam"
    assert label("a1", {}) == "a1"


@pytest.mark.parametrize("limit", [20, 40, 143])
@pytest.mark.parametrize("values", [LONG, {"milestones": list(range(200))}, {"optim": "é" * 300},
                                    {"a/b": "c/d\0"}])
def test_no_value_makes_a_label_too_long_or_a_path(values, limit):
    text = label("trial 0123abcd:", values, limit)
    assert len(text.encode()) <= limit and "/" not in text and "\0" not in text
    text.encode().decode()  # whole UTF-8 characters


def actor_class(params):
    """The class Ray builds the trial's actor from, as tuner.run hands it the trainable."""
    return wrap_function(tune.with_parameters(named_trial(params), arrays={"x": np.zeros(1)}))


def test_rays_function_trainable_takes_the_actor_name_hook():
    """named_trial leans on two Ray internals: a function's `__mixins__` join the trainable class, whose repr
    (the dashboard's and log prefixes' actor name) is its `_name`. A Ray release that moves either fails here."""
    cls = actor_class(["lr"])
    mixins = [c.__name__ for c in cls.__mro__]
    assert "NamedTrial" in mixins, f"Ray's wrap_function no longer mixes in a function's __mixins__: {mixins}"
    actor = object.__new__(cls)
    actor._name = "trial x: lr=0.001"
    assert repr(actor) == "trial x: lr=0.001", "Ray's function trainable no longer shows `_name` as its repr"


def test_a_trial_actor_name_stays_short_whatever_its_values():
    mixin = next(c for c in actor_class(list(LONG)).__mro__ if c.__name__ == "NamedTrial")

    class Trainable:  # what Ray's Trainable sets before the mixin names the actor
        def __init__(self):
            self.config, self.trial_id = LONG, "b63aaa53"

    name = type("Actor", (mixin, Trainable), {})()._name
    assert name.startswith("trial b63aaa53: kl_anneal_type=Cyclical") and name.endswith(" ...")
    assert len(name.encode()) <= LABEL_BYTES


def test_rays_stop_handler_is_what_sigterm_and_a_filling_disk_call():
    """SIGTERM and a disk running full end a search through Ray Tune's own stop handler, which tune.run installs
    for SIGUSR1 while a search runs and which logs "Stop signal received" (what the search reads to tell an
    interrupted search). A Ray release that moves either fails here, naming it."""
    tune_module = importlib.import_module("ray.tune.tune")
    assert hasattr(tune_module, "_setup_signal_catching"), "Ray Tune no longer has tune._setup_signal_catching"
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    logger, watch = logging.getLogger("ray.tune.tune"), tuner.RayStopWatch()
    logger.addFilter(watch)
    try:
        stopped = tune_module._setup_signal_catching()
        handler = signal.getsignal(signal.SIGUSR1)
        assert callable(handler), "Ray Tune no longer handles SIGUSR1 while a search runs"
        handler(signal.SIGUSR1, None)
        assert stopped.is_set(), "Ray Tune's SIGUSR1 handler no longer stops the search"
        assert watch.stopped, "Ray Tune's stop warning no longer says 'Stop signal received'"
    finally:
        logger.removeFilter(watch)
        for s, h in before.items():
            signal.signal(s, h)
