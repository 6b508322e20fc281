"""The report's figures: epoch axes tick whole epochs, counts read as sentences."""
from tune_cvae.experiment import figures


def test_epoch_axes_tick_whole_epochs_and_counts_read_as_sentences(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig))
    results = [{"epoch": e, "tfr": 1.0, "beta": 0.5, "loss": 1.0 / e, "mse": 0.1, "kl": 0.2, "val_psnr": 20.0 + e,
                "teacher_forcing": e == 1} for e in (1, 2, 3)]
    figures.tfr(results, "a1", tmp_path / "tfr.png")
    figures.kl_types({"None": ("a1", results, 23.0, 1, 1)}, tmp_path / "kl.png", "val_psnr", 3)
    reading = figures.asha([("a1", "finished", [1, 2, 3], [20, 21, 22]), ("b2", "stopped early", [1], [19])],
                           "val_psnr", [1], 3, tmp_path / "asha.png")
    for fig in drawn:
        fig.canvas.draw()
        for ax in fig.axes[:1] + fig.axes[-2:]:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert reading[0].startswith("1 trial finished, 1 trial was stopped early at the rungs")
