"""Helpers the tests share: a tiny model config and a writer of small LAB4-layout folders."""
from pathlib import Path

import numpy as np
from PIL import Image

# small enough for CPU tests; bottleneck channels (F_dim/8 = 4) still carry colour
TINY = {"F_dim": 32, "L_dim": 8, "N_dim": 4, "D_out_dim": 32, "batch_size": 2, "lr_scheduler": "none"}


def write_lab4(root, size=(16, 32), n_train=40, n_val=4, n_test=1, test_len=630, seed=0):
    """A minimal valid LAB4-layout folder of random images of any on-disk size (H, W)."""
    rng = np.random.default_rng(seed)
    root = Path(root)

    def img(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, compress_level=0)

    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            img(root / f"{split}/{split}_img/frame{i}.png")
            img(root / f"{split}/{split}_label/frame{i}.png")
    for v in range(n_test):
        img(root / f"test/test_img/{v}/frame0.png")
        for i in range(test_len):
            img(root / f"test/test_label/{v}/frame{i}.png")
    return root
