"""Shared fixtures: a private cache folder, the built-in data at test size, one Ray session, a smoke search."""
import atexit
import dataclasses
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

os.environ["TUNE_CVAE_CACHE"] = tempfile.mkdtemp(prefix="tune_cvae_test_cache_")
atexit.register(shutil.rmtree, os.environ["TUNE_CVAE_CACHE"], ignore_errors=True)  # ~100 MB per run otherwise
# the test S3 server's credentials, set before any Ray node starts so that every node has them (as a cluster's
# nodes need them); the AWS SDK never looks for an EC2 instance's (nothing leaves this machine)
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_EC2_METADATA_DISABLED="true")

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
    """One Ray session for all tests: two local nodes of one CPU each (ray.cluster_utils.Cluster), honest about
    machines: each node has a temp folder of its own, as on two machines, so a trial on the worker node writes
    where the driver cannot look, and only what reaches the storage counts."""
    import ray
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster
    folders = [tempfile.mkdtemp(prefix=f"ray{n}_") for n in "AB"]  # short: Ray's socket paths must fit 107 bytes
    # Cluster writes its address where `ray start` does (and removes it at shutdown), into a folder a fresh
    # machine does not have yet
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "temp_dir": folders[0]})
    cluster.add_node(num_cpus=1, temp_dir=folders[1])
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


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


class S3:
    """moto's S3-compatible server on 127.0.0.1 with the bucket `tune-cvae`: `uri(prefix)` is a storage URI in it."""

    def __init__(self):
        from moto.server import ThreadedMotoServer
        import pyarrow.fs
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.host, self.port = self.server.get_host_and_port()
        self.fs = pyarrow.fs.S3FileSystem(endpoint_override=f"{self.host}:{self.port}", scheme="http",
                                          region="us-east-1", allow_bucket_creation=True)
        self.fs.create_dir("tune-cvae")

    def uri(self, prefix):
        return f"s3://tune-cvae/{prefix}?region=us-east-1&endpoint_override=http://{self.host}:{self.port}"

    def files(self, prefix):
        """The names of every file under `prefix` in the bucket, relative to it."""
        import pyarrow.fs
        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(f"tune-cvae/{prefix}", recursive=True,
                                                              allow_not_found=True))
        return [i.path[len(f"tune-cvae/{prefix}/"):] for i in infos if i.type == pyarrow.fs.FileType.File]


@pytest.fixture(scope="session")
def s3():
    server = S3()
    yield server
    server.server.stop()
