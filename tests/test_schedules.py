"""Schedules against values computed by hand from the template's Trainer."""
import pytest

from tune_cvae.lab.schedules import data_fraction, frange_cycle_linear, kl_beta, teacher_forcing_ratio
from tune_cvae.lab.config import make_config


def betas(n, **kw):
    config = make_config({"num_epoch": n, **kw})
    return [kl_beta(e, config) for e in range(n + 2)]


def test_cyclical_template_defaults_ramp_every_seven_epochs():
    b = betas(70)  # cycle 10, ratio 1: period 7, step 1/7
    assert b[:8] == pytest.approx([0, 1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 0])
    assert b[69] == pytest.approx(6 / 7)
    assert b[70] == b[71] == 1.0  # past the schedule: the template's except-branch, beta = 1


def test_cyclical_ratio_half_then_flat():
    assert betas(10, kl_anneal_cycle=2, kl_anneal_ratio=0.5)[:10] == pytest.approx(
        [0, 0.4, 0.8, 1, 1, 0, 0.4, 0.8, 1, 1])


def test_kl_beta_max_is_the_ceiling():
    assert betas(10, kl_anneal_cycle=2, kl_anneal_ratio=0.5, kl_beta_max=0.5)[:10] == pytest.approx(
        [0, 0.2, 0.4, 0.5, 0.5, 0, 0.2, 0.4, 0.5, 0.5])


def test_monotonic_is_one_ramp_like_the_seed_formula():
    b = betas(10, kl_anneal_type="Monotonic", kl_anneal_ratio=0.5)
    assert b[:10] == pytest.approx([min(1.0, e / (10 * 0.5)) for e in range(10)])
    assert b[:6] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_none_is_constant():
    assert set(betas(5, kl_anneal_type="None", kl_beta_max=0.3)) == {0.3}


def test_frange_cycle_linear_more_cycles_than_epochs_gives_zero():
    # the template's behaviour when kl_anneal_cycle > num_epoch: every index is a cycle start
    assert frange_cycle_linear(3, 0.0, 1.0, 10, 1.0) == [0.0, 0.0, 0.0]


def test_teacher_forcing_decays_after_tfr_sde():
    config = make_config({"tfr": 1.0, "tfr_sde": 10, "tfr_d_step": 0.1})
    tfr = [teacher_forcing_ratio(e, config) for e in range(25)]
    assert tfr[:10] == [1.0] * 10
    assert tfr[10:13] == pytest.approx([0.9, 0.8, 0.7])
    assert tfr[19] == pytest.approx(0.0, abs=1e-12)
    assert all(t >= 0 for t in tfr) and tfr[24] == 0.0


def test_teacher_forcing_sde_zero_decays_from_the_first_epoch_end():
    config = make_config({"tfr": 0.5, "tfr_sde": 0, "tfr_d_step": 0.25})
    assert [teacher_forcing_ratio(e, config) for e in range(4)] == [0.5, 0.25, 0.0, 0.0]


def test_fast_train_fraction():
    config = make_config({"fast_train": True, "fast_train_epoch": 5, "fast_partial": 0.4, "partial": 1.0})
    assert [data_fraction(e, config) for e in range(7)] == [0.4] * 5 + [1.0] * 2
    assert data_fraction(0, make_config({"partial": 0.3})) == 0.3
