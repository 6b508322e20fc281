"""Shared fixtures: a private cache folder, small LAB4 folders, a tiny model config."""
import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["TUNE_CVAE_CACHE"] = tempfile.mkdtemp(prefix="tune_cvae_test_cache_")

from tune_cvae import data as lab4  # noqa: E402
from tune_cvae.synthetic import generate  # noqa: E402

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


@pytest.fixture(scope="session")
def builtin_root(tmp_path_factory):
    """The built-in synthetic dataset at a reduced training size (the layout is the real one)."""
    return generate(tmp_path_factory.mktemp("builtin") / "lab4", train_frames=480, seed=0)


@pytest.fixture(scope="session")
def builtin(builtin_root):
    return lab4.load(builtin_root, progress=False)


@pytest.fixture(scope="session")
def short_val(builtin):
    """The built-in data with a 24-frame validation video, for tests about training mechanics, not quality."""
    return dataclasses.replace(builtin, val_img=builtin.val_img[:24], val_label=builtin.val_label[:24])


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray session for all tests: two local nodes of one CPU each (ray.cluster_utils.Cluster)."""
    import ray
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def smoke(ray_cluster, builtin_root, tmp_path_factory):
    """A finished smoke search (smoke.yaml) on the built-in data: its experiment folder."""
    from tune_cvae import search
    storage = tmp_path_factory.mktemp("ray_results")
    return search.run("smoke.yaml", data=str(builtin_root), storage=storage, name="smoke", dashboard=False,
                      verbose=0)
