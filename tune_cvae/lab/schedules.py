"""KL annealing, teacher forcing and the fast-train data fraction as pure functions of (epoch, config).

Epochs count from 0. Each function returns the value in force DURING that epoch, reproducing the template's
Trainer, which updates its schedules after each epoch: beta(e) = frange_cycle_linear(...)[e], and the teacher
forcing ratio decays once after every epoch whose (1-based) number is >= tfr_sde.
"""


def frange_cycle_linear(n_iter, start=0.0, stop=1.0, n_cycle=1, ratio=1.0):
    """Fu et al. 2019's cyclical schedule, exactly as the Lab4 template computes it (float steps included)."""
    values = [float(stop)] * n_iter
    period = n_iter / n_cycle
    step = (stop - start) / (period * ratio)
    for c in range(n_cycle):
        v, i = start, 0
        while v <= stop and int(i + c * period) < n_iter:
            values[int(i + c * period)] = v
            v += step
            i += 1
    return values


def kl_beta(epoch, config):
    """Weight of the KL term during `epoch`: Cyclical, Monotonic (one ramp) or None (always kl_beta_max)."""
    kind, stop = config["kl_anneal_type"], config["kl_beta_max"]
    if kind == "None":
        return float(stop)
    cycles = config["kl_anneal_cycle"] if kind == "Cyclical" else 1
    betas = frange_cycle_linear(config["num_epoch"], 0.0, stop, cycles, config["kl_anneal_ratio"])
    return betas[epoch] if epoch < len(betas) else float(stop)


def teacher_forcing_ratio(epoch, config):
    """The ratio in force during `epoch`: starts at tfr, then after each epoch n (1-based) with
    n >= tfr_sde loses tfr_d_step, never going below 0."""
    tfr = config["tfr"]
    for finished in range(1, epoch + 1):
        if finished >= config["tfr_sde"]:
            tfr = max(0.0, tfr - config["tfr_d_step"])
    return tfr


def data_fraction(epoch, config):
    """Fraction of the training list used during `epoch`: fast_partial for the first fast_train_epoch epochs
    when fast_train is on, else partial."""
    if config["fast_train"] and epoch < config["fast_train_epoch"]:
        return config["fast_partial"]
    return config["partial"]
