"""The lab's figures of a search, drawn from its files (report/*.png): each function takes plain numbers, draws one
figure with a title, labelled axes and a legend, and returns the two-line reading that goes beside it.
"""
import math

import numpy as np

from tune_cvae.experiment.files import FINISHED, STOPPED
from tune_cvae.experiment.space import short
from tune_cvae.lab.leaderboard import SCORED

__all__ = ["asha", "importance", "kl_types", "parallel", "pbt_schedule", "psnr_per_frame", "pyplot", "save", "tfr",
           "whole_epochs"]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    """The figure as a PNG at `path`, then closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def _column(results, key):
    return [r.get(key, math.nan) for r in results]


def whole_epochs(ax):
    """Ticks of an epoch axis on whole epochs only (not 1.25, 1.5, ...)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _trials(n, verb, passive=False):
    """'1 trial finished' / '3 trials were stopped early': counts in the readings read as sentences."""
    auxiliary = (" was" if n == 1 else " were") if passive else ""
    return f"{n} trial{'' if n == 1 else 's'}{auxiliary} {verb}"


def tfr(results, trial_id, path):
    """Teacher-forcing ratio, whether the epoch drew teacher forcing, and beta per epoch; the training loss on a
    second axis."""
    plt = pyplot()
    epochs = _column(results, "epoch")
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(epochs, _column(results, "tfr"), "o-", color="tab:blue", label="teacher-forcing ratio")
    ax.plot(epochs, _column(results, "beta"), "s--", color="tab:green", label="beta (KL weight)")
    forced = [e for e, r in zip(epochs, results) if r.get("teacher_forcing")]
    ax.scatter(forced, [1.05] * len(forced), marker="|", s=120, color="black", label="epoch drew teacher forcing")
    ax.set(xlabel="epoch", ylabel="ratio, beta (0..1)", ylim=(-0.05, 1.12),
           title=f"Teacher forcing and KL weight of the best trial ({trial_id})")
    whole_epochs(ax)
    loss_ax = ax.twinx()
    loss = _column(results, "loss")
    loss_ax.plot(epochs, loss, "^-", color="tab:red", label="training loss")
    loss_ax.set_ylabel("training loss (MSE + beta * KL)")
    if all(v > 0 for v in loss if not math.isnan(v)):
        loss_ax.set_yscale("log")
    lines = ax.get_legend_handles_labels()
    more = loss_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    save(fig, path)
    on = len(forced)
    return (f"The best trial {trial_id} drew teacher forcing in {on} of {len(results)} epochs "
            f"(its ratio went from {results[0].get('tfr', math.nan):.3g} to {results[-1].get('tfr', math.nan):.3g}).",
            f"Its training loss went from {loss[0]:.4g} to {loss[-1]:.4g}.")


def kl_types(best_by_type, path, metric, full_budget):
    """Per KL-annealing type, its best trial's loss, MSE, KL and val_psnr per epoch on shared axes.
    `best_by_type`: {type: (trial_id, results, best value, trials of that type, trials at full budget)}, the
    best type first."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    for (kl_type, (trial_id, results, _, _, _)), color in zip(best_by_type.items(), plt.cm.tab10.colors):
        epochs = _column(results, "epoch")
        for ax, key in zip(axes.flat, ("loss", "mse", "kl", "val_psnr")):
            ax.plot(epochs, _column(results, key), "o-", ms=3, color=color, label=f"{kl_type} ({trial_id})")
    for ax, key, unit in zip(axes.flat, ("loss", "mse", "kl", "val_psnr"),
                             ("training loss", "training MSE (per pixel)", "training KL", "validation PSNR (dB)")):
        ax.set(title=f"{key} per epoch", ylabel=unit)
        if key in ("loss", "kl") and ax.get_ylim()[0] > 0:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        whole_epochs(ax)
    fig.suptitle("Best trial of each KL-annealing type")
    save(fig, path)
    ranked = list(best_by_type.items())  # best type first
    name, (_, _, best, n, full) = ranked[0]
    gap = (f", {abs(best - ranked[1][1][2]):.3g} better than {ranked[1][0]}" if len(ranked) > 1 else
           ", the only type searched")
    return (f"{name} won with a best {metric} of {best:.4g}{gap} (the best trial of each type).",
            f"Over {sum(v[3] for v in best_by_type.values())} trials; at the full {full_budget} epochs: "
            + ", ".join(f"{k} {v[4]} of {v[3]}" for k, v in ranked) + ".")


def psnr_per_frame(psnr, source, path):
    """A validation rollout's PSNR of each frame 1..T-1 (`source` says whose), the leaderboard's window marked."""
    plt = pyplot()
    psnr = np.asarray(psnr, dtype=float)
    frames = np.arange(1, len(psnr) + 1)
    first, last = SCORED.start, SCORED.stop - 1
    window = psnr[first - 1:last]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.axvspan(first, min(last, len(psnr)), color="tab:orange", alpha=0.12,
               label=f"leaderboard window (frames {first}..{last})")
    ax.plot(frames, psnr, lw=1, label="PSNR per frame")
    ax.axhline(window.mean(), color="tab:red", ls="--", lw=1, label=f"mean over the window {window.mean():.2f} dB")
    ax.set(xlabel="frame index", ylabel="PSNR (dB)", title=f"Validation PSNR per frame: {source}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8)  # below: the curve fills the axes
    save(fig, path)
    head, tail = psnr[:10].mean(), window[-100:].mean()
    return (f"{source}: mean {window.mean():.2f} dB over frames 1..{len(window)} (the leaderboard's window).",
            f"Frames 1-10 average {head:.2f} dB and the window's last 100 frames {tail:.2f} dB: the rollout "
            f"{'loses' if tail < head else 'gains'} {abs(head - tail):.2f} dB as it drifts.")


def importance(importances, evaluator, n_trials, path):
    """Optuna's parameter importances as horizontal bars."""
    plt = pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:blue", label=evaluator)
    ax.set(xlabel="importance (normalised to sum to 1)", title=f"Parameter importance over {n_trials} trials")
    ax.legend(loc="lower right", fontsize=8)
    save(fig, path)
    top = list(importances.items())
    second = f", then {top[1][0]} ({top[1][1]:.0%})" if len(top) > 1 else ""
    return (f"{top[0][0]} explains the most ({top[0][1]:.0%}){second}, by Optuna's {evaluator}.",
            f"Computed over {n_trials} trials, each valued at its best epoch (stopped trials at their lower budget).")


def parallel(table, params, log_params, metric, path):
    """Parallel coordinates: one line per trial over the searched parameters, coloured by its best metric."""
    plt = pyplot()
    col = f"best_{metric}"
    rows = table[table[col].notna()]
    fig, ax = plt.subplots(figsize=(min(16, max(6, 1.1 * len(params) + 2)), 5))
    cmap = plt.cm.viridis
    values = rows[col].to_numpy(dtype=float)
    lo, hi = (values.min(), values.max()) if len(values) else (0, 1)
    scaled, ticks = [], []
    for p in params:
        column = rows[p].replace("", np.nan)
        numeric = np.array([float(v) if _is_number(v) else np.nan for v in column], dtype=float)
        if np.isnan(numeric).all() and column.notna().any():  # categorical: one level per category
            cats = sorted(column.dropna().astype(str).unique())
            numeric = np.array([cats.index(str(v)) if str(v) in cats else np.nan for v in column], dtype=float)
            ticks.append(f"{p}\n" + " / ".join(cats))
            span = (0, max(len(cats) - 1, 1))
        else:
            if p in log_params:
                numeric = np.log10(numeric)
            finite = numeric[np.isfinite(numeric)]
            span = (finite.min(), finite.max()) if len(finite) else (0, 1)
            fmt = (lambda v: f"{10 ** v:.2g}") if p in log_params else (lambda v: f"{v:.3g}")
            ticks.append(f"{p}{' (log)' if p in log_params else ''}\n{fmt(span[0])} .. {fmt(span[1])}")
        scaled.append((numeric - span[0]) / ((span[1] - span[0]) or 1))
    xs = np.arange(len(params))
    for i, v in enumerate(values):
        # markers too: a conditional parameter a trial did not use leaves a gap in its line
        ax.plot(xs, [s[i] for s in scaled], color=cmap((v - lo) / ((hi - lo) or 1)), alpha=0.8, lw=1.2,
                marker="o", ms=3)
    for x in xs:
        ax.axvline(x, color="grey", lw=0.5)
    ax.set_xticks(xs, ticks, fontsize=6, rotation=30, ha="right")
    ax.set(ylabel="position in the searched range (0 = low, 1 = high)", ylim=(-0.05, 1.05),
           title=f"Searched values of {len(rows)} trials, coloured by best {metric}")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label=f"best {metric}")
    save(fig, path)
    best = rows.iloc[0]
    return (f"Each line is a trial; the brightest is the best ({best['trial_id']}, {metric} {best[col]:.4g}).",
            "Best trial's values: " + ", ".join(f"{p} {short(best[p])}" for p in params
                                                if best[p] != "" and best[p] == best[p]) + ".")


def _is_number(v):
    try:
        float(v)
        return not isinstance(v, bool)
    except (TypeError, ValueError):
        return False


def asha(curves, metric, rungs, max_epochs, path):
    """Every trial's metric per epoch: finished trials solid, stopped ones dashed, ASHA's rungs as vertical
    lines. `curves`: [(trial_id, status, epochs, values)]."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    styles = {FINISHED: ("-", "tab:blue"), STOPPED: ("--", "tab:grey")}
    shown = set()
    for trial_id, status, epochs, values in curves:
        ls, color = styles.get(status, (":", "tab:red"))
        label = status if status not in shown else None
        shown.add(status)
        ax.plot(epochs, values, ls=ls, color=color, marker="o", ms=2.5, lw=1, label=label)
    for i, rung in enumerate(rungs):
        ax.axvline(rung, color="tab:orange", lw=0.8, label="ASHA rung" if i == 0 else None)
    ax.set(xlabel="epoch", ylabel=metric + (" (dB)" if "psnr" in metric else ""), xlim=(0.5, max_epochs + 0.5),
           title=f"{metric} per epoch of every trial" + (" (ASHA stops the worse ones at its rungs)" if rungs else ""))
    whole_epochs(ax)
    ax.legend(fontsize=8)
    save(fig, path)
    stopped = [c for c in curves if c[1] == STOPPED]
    used = sum(len(c[2]) for c in curves)
    finished = sum(c[1] == FINISHED for c in curves)
    where = f"at the rungs (epochs {', '.join(map(str, rungs))})" if rungs else "(by the budget: no early stopping)"
    return (f"{_trials(finished, 'finished')}, {_trials(len(stopped), 'stopped early', passive=True)} {where}.",
            f"All trials trained {used} epochs in total, against the {len(curves) * max_epochs} that "
            f"{len(curves)} full trials of {max_epochs} epochs would take.")


def pbt_schedule(rows, trial_id, path):
    """The schedule a PBT trial's weights trained with (rows: lineage.assemble's): the KL weight, the
    teacher-forcing ratio and the lr per epoch, one panel each, val_psnr on the first; a dashed line at each
    exploit, named after the trial whose weights were taken."""
    plt = pyplot()
    epochs = _column(rows, "epoch")
    fig, axes = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
    for ax, key, name, log in ((axes[0], "beta", "KL weight (beta)", True), (axes[1], "tfr", "teacher-forcing ratio",
                               False), (axes[2], "lr", "learning rate", True)):
        ax.step(epochs, _column(rows, key), "o-", where="mid", label=name)
        ax.set_ylabel(name)
        if log and all(v > 0 for v in _column(rows, key)):
            ax.set_yscale("log")
    psnr_ax = axes[0].twinx()
    psnr_ax.plot(epochs, _column(rows, "val_psnr"), "^-", color="tab:red", label="val_psnr")
    psnr_ax.set_ylabel("val_psnr (dB)")
    owners = [r["trained_by"] for r in rows]
    for i in range(1, len(rows)):
        if owners[i] != owners[i - 1]:
            for ax in axes:
                ax.axvline(epochs[i] - 0.5, color="gray", ls="--", lw=1)
            axes[2].annotate(f"took {owners[i - 1]}'s weights", (epochs[i] - 0.5, 0.05), xycoords=("data",
                             "axes fraction"), fontsize=7, rotation=90, ha="right", va="bottom")
    axes[0].set_title(f"Schedule learned by PBT: the weights of trial {trial_id}, epoch by epoch")
    axes[0].legend(loc="upper left", fontsize=8)
    psnr_ax.legend(loc="lower right", fontsize=8)
    axes[2].set_xlabel("epoch (the trial that trained it: dashed lines mark exploits)")
    whole_epochs(axes[2])
    save(fig, path)
    first, last = rows[0], rows[-1]
    trainers = list(dict.fromkeys(owners))
    return (f"Trial {trial_id}'s weights after epoch {last['epoch']} were trained by {len(trainers)} trial(s) in turn "
            f"({' > '.join(trainers)}): {len(trainers) - 1} exploit(s) on their way.",
            f"Its KL weight went from {first['beta']:.3g} to {last['beta']:.3g}, its teacher-forcing ratio from "
            f"{first['tfr']:.3g} to {last['tfr']:.3g}, its lr from {first['lr']:.3g} to {last['lr']:.3g}.")
