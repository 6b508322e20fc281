"""Shared fixtures: a private cache folder, the built-in data at test size, one Ray session, a smoke search."""
import atexit
import dataclasses
import os
import shutil
import subprocess
import tempfile

import pytest

os.environ["TUNE_CVAE_CACHE"] = tempfile.mkdtemp(prefix="tune_cvae_test_cache_")
atexit.register(shutil.rmtree, os.environ["TUNE_CVAE_CACHE"], ignore_errors=True)  # ~100 MB per run otherwise

from tune_cvae.lab.data import load_dataset  # noqa: E402
from tune_cvae.lab.synthetic import generate  # noqa: E402


@pytest.fixture(scope="session")
def builtin_root(tmp_path_factory):
    """The built-in synthetic dataset at a reduced training size (the layout is the real one)."""
    return generate(tmp_path_factory.mktemp("builtin") / "lab4", train_frames=480, seed=0)


@pytest.fixture(scope="session")
def builtin(builtin_root):
    return load_dataset(builtin_root, progress=False)


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
    from tune_cvae.search import tuner
    storage = tmp_path_factory.mktemp("ray_results")
    return tuner.run("smoke.yaml", data_dir=str(builtin_root), storage=storage, name="smoke", dashboard=False,
                      verbose=0)


@pytest.fixture
def tmpfs(tmp_path):
    """A factory of small file systems (tmpfs, root only): (name, size, read_only) -> its folder; the test skips
    where none can be mounted."""
    mounted = []

    def mount(name, size, read_only=False):
        folder = tmp_path / name
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
