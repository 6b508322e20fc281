"""Where experiments live: a folder, or a URI (an S3-compatible server on 127.0.0.1 here): checked before any
work, pushed and pulled, credentials never shown."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tune_cvae.common import UserError
from tune_cvae.experiment.storage import Storage, experiment_at, is_uri, shown

ROOT = Path(__file__).resolve().parent.parent


def test_a_uri_is_told_from_a_path_and_its_credentials_are_never_shown():
    assert is_uri("s3://b/p?region=x") and is_uri("gs://b") and not is_uri("ray_results") and not is_uri("/a/b")
    assert not is_uri("file:///tmp/x")  # a folder, as pyarrow reads it
    assert shown("s3://AKIA123:VERYSECRET@b/p?region=us-east-1") == "s3://***@b/p?region=us-east-1"
    assert shown("s3://b/p?access_key=AKIA123&secret_key=VERYSECRET") == "s3://b/p?access_key=***&secret_key=***"
    where, name = experiment_at("s3://b/runs/exp1?region=us-east-1")
    assert name == "exp1" and where.uri("exp1") == "s3://b/runs/exp1?region=us-east-1"
    with pytest.raises(UserError, match="name an experiment inside the storage"):
        experiment_at("s3://b")


def test_an_error_is_explained_by_what_went_wrong_not_by_digits_in_a_probes_name():
    where = Storage("s3://b/x?region=us-east-1&endpoint_override=http://127.0.0.1:9")
    down = OSError("When initiating multiple part upload for key 'x/.tune_cvae_probe.75b8128eadd9403cb1': AWS Error "
                   "NETWORK_CONNECTION during CreateMultipartUpload operation: curlCode: 7, Could not connect")
    refused = OSError("When reading information for key 'x' in bucket 'b': AWS Error ACCESS_DENIED during HeadObject "
                      "operation: No response body. HTTP 403")
    assert ": unreachable (" in where.explain(down) and "credentials" not in where.explain(down)
    assert "the credentials were refused" in where.explain(refused)

def test_a_nearly_full_folder_is_refused_before_any_work(tmpfs):
    """A 2 MB storage with little room once passed the 64 KB write probe, then every trial errored writing its
    checkpoint and the search ended on a traceback."""
    disk = tmpfs("small", "2m")
    (disk / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 160 * 1024))
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--storage", str(disk / "rr")],
                          capture_output=True, text=True, cwd=ROOT, env={k: v for k, v in os.environ.items()
                                                                         if k != "RAY_ADDRESS"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith(f"error: --storage {disk / 'rr'}: ") and "KB free; a search keeps at " \
        "least 16 MB free" in proc.stderr
    assert not (disk / "rr").exists()


def test_an_experiment_goes_up_and_comes_down_whole(s3, tmp_path):
    where = Storage(s3.uri("roundtrip"))
    where.check()
    local = where.folder("e")
    (local / "trial_a" / "checkpoint_000001").mkdir(parents=True)
    (local / "search.yaml").write_text("space: {}\n")
    (local / "trial_a" / "epochs.jsonl").write_text('{"epoch": 1}\n')
    (local / "trial_a" / "checkpoint_000001" / "state.pt").write_bytes(b"weights")
    where.push("e", ["search.yaml", "trial_a"])
    assert sorted(s3.files("roundtrip/e")) == ["search.yaml", "trial_a/checkpoint_000001/state.pt",
                                               "trial_a/epochs.jsonl"]
    import shutil
    shutil.rmtree(local)
    assert where.pull("e") == local and (local / "trial_a" / "epochs.jsonl").read_text() == '{"epoch": 1}\n'
    assert not (local / "trial_a" / "checkpoint_000001").exists()  # checkpoints come down when needed
    where.pull_checkpoints("e", local / "trial_a")
    assert (local / "trial_a" / "checkpoint_000001" / "state.pt").read_bytes() == b"weights"
    assert where.experiments() == ["e"] and where.has("e") and not where.has("f") and where.reachable("e")


def run_search(*args, env=None):
    return subprocess.run([sys.executable, "run_search.py", "--space", "smoke", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300,
                          env=env or {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})


def test_a_storage_that_cannot_take_the_search_is_one_line_before_any_work(s3, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]  # nothing listens there
    cases = [
        (s3.uri("x").replace("tune-cvae", "no-such-bucket"), "no such bucket"),
        (f"s3://tune-cvae/x?region=us-east-1&endpoint_override=http://127.0.0.1:{free_port}", "unreachable"),
        ("s3://tune-cvae/x?region=us-east-1&scheme=http&endpoint_override=http://[bad", "not a storage URI pyarrow"),
    ]
    for uri, message in cases:
        proc = run_search("--storage", uri.replace("s3://", "s3://AKIA123:VERYSECRET@"))
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert "VERYSECRET" not in proc.stderr and "s3://***@" in proc.stderr
    missing = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RAY_ADDRESS"}
    proc = run_search("--storage", s3.uri("x"), env={**missing, "AWS_EC2_METADATA_DISABLED": "true",
                                                     "HOME": str(tmp_path)})
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "no credentials for it: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"), proc.stderr
    assert s3.files("x") == []


def test_credentials_the_server_refuses_are_one_line_naming_them(tmp_path):
    """A server that checks keys (moto with INITIAL_NO_AUTH_ACTION_COUNT=0 knows none): refused before any work."""
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.time() < deadline and server.poll() is None
            time.sleep(0.2)
        proc = run_search("--storage", f"s3://any/x?region=us-east-1&endpoint_override=http://127.0.0.1:{port}")
        assert proc.returncode == 2 and "the credentials were refused" in proc.stderr, proc.stderr
        assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in proc.stderr and "testing" not in proc.stderr
    finally:
        server.kill()
        server.wait()


def bucket_trials(s3, prefix):
    """{trial folder: [its files]} of an experiment in the bucket."""
    trials = {}
    for name in s3.files(prefix):
        if name.startswith("trial_"):
            folder, _, rest = name.partition("/")
            trials.setdefault(folder, []).append(rest)
    return trials


@pytest.mark.slow
def test_a_search_in_s3_on_nodes_that_share_no_folder_resumes_and_is_read_back_from_the_bucket(
        ray_cluster, builtin_root, s3, tmp_path):
    """run_search.py --address --storage s3://... killed with SIGKILL after its first trial ended, resumed from the
    bucket; every trial's records (from both nodes) are in the bucket; run_best.py and the report, given the URI
    and nothing on disk, write a scored submission and the figures of every trial, and upload them."""
    import shutil
    import signal
    import time
    from helpers import read_trials
    from tune_cvae.search import tuner
    uri, env = s3.uri("searches"), {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.Popen([sys.executable, "run_search.py", "--space", "smoke", "--samples", "4", "--data",
                             str(builtin_root), "--storage", uri, "--name", "s"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while "optuna.journal" not in s3.files("searches/s") or not any(f.endswith("epochs.jsonl")
                                                                   for f in s3.files("searches/s")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    exp = tuner.run(None, resume=True, name="s", storage=uri, dashboard=False, verbose=0)
    table = read_trials(exp / "trials.csv")
    # ASHA may or may not stop one: that depends on the values drawn and which node reports first
    assert len(table) == 4 and set(table.status) <= {"finished", "stopped early"}, table
    trials = bucket_trials(s3, "searches/s")
    assert set(trials) == set(table.trial_dir)
    for folder, names in trials.items():  # the trainable's own records, uploaded from whichever node ran it
        assert "epochs.jsonl" in names and any("events.out.tfevents" in n for n in names), (folder, names)
    nodes = {json.loads(line)["node_id"] for d in exp.glob("trial_*") for line in (d / "epochs.jsonl").open()}
    assert len(nodes) == 2  # the driver's node and the worker node, each with its own temp folder
    experiment = s3.uri("searches/s")
    shutil.rmtree(exp)  # nothing on disk: the readers take the URI
    best = subprocess.run([sys.executable, "run_best.py", "--experiment", experiment, "--epochs", "1"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert best.returncode == 0 and "submission: score" in best.stdout, best.stderr[-2000:]
    assert {"best/submission.csv", "best/summary.json", "report/index.html"} <= set(s3.files("searches/s"))
    shutil.rmtree(exp)
    report = subprocess.run([sys.executable, "-m", "tune_cvae", "report", experiment], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    index = (exp / "report" / "index.md").read_text()
    assert all(t in index for t in table.trial_id) and "psnr_per_frame.png" in index
    finished, stopped = (table.status == "finished").sum(), (table.status == "stopped early").sum()
    assert f"{finished} trial{'s' if finished > 1 else ''} finished, {stopped} trial" in index  # every curve drawn


@pytest.mark.slow
def test_a_pbt_search_in_s3_replays_its_winners_lineage_from_the_bucket(ray_cluster, builtin_root, s3, tmp_path):
    import shutil
    import yaml
    from helpers import pbt_space
    from tune_cvae.experiment.best import run_best
    from tune_cvae.search import tuner
    (tmp_path / "pbt.yaml").write_text(yaml.safe_dump(pbt_space()))
    exp = tuner.run(str(tmp_path / "pbt.yaml"), data_dir=str(builtin_root), storage=s3.uri("pbt"), name="p",
                    dashboard=False, verbose=0)
    shutil.rmtree(exp)
    out, summary = run_best(experiment=s3.uri("pbt/p"), out=tmp_path / "best")
    assert summary["replay"]["epochs"] == 3 and summary["replay"]["largest_difference_db"] <= 0.3
    assert "score" in summary and (out / "schedule.csv").is_file()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_storage_that_stops_answering_mid_search_ends_it_in_one_line_with_the_table(ray_cluster, tmp_path,
                                                                                        builtin_root):
    """Like a full disk: exit 1, the table (from the records Ray's driver kept), and the command that continues
    the search once the storage answers again; no traceback of ours."""
    import socket
    import time
    import pyarrow.fs
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert server.poll() is None
            time.sleep(0.2)
        fs = pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                     allow_bucket_creation=True)
        fs.create_dir("gone")
        uri = f"s3://gone/x?region=us-east-1&endpoint_override=http://127.0.0.1:{port}"
        search = subprocess.Popen([sys.executable, "run_search.py", "--space", "smoke", "--data", str(builtin_root),
                                   "--storage", uri, "--name", "u"], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
        deadline = time.time() + 300
        while not any(i.path.endswith("epochs.jsonl") for i in fs.get_file_info(
                pyarrow.fs.FileSelector("gone", recursive=True, allow_not_found=True))):
            assert search.poll() is None and time.time() < deadline
            time.sleep(0.5)
    finally:
        server.kill()
        server.wait()
    out, err = search.communicate(timeout=600)
    assert search.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{uri}: the storage stopped answering (the search stopped there); ") and last.endswith(
        f"once it answers again, continue it with: python run_search.py --resume --name u --storage '{uri}'")
    assert "trials by val_psnr" in out and not err.strip().splitlines()[-1].startswith("Traceback")


@pytest.mark.slow
def test_a_folder_a_worker_node_cannot_see_ends_the_search_before_the_data_is_decoded(tmp_path):
    """A worker node in a mount namespace of its own, with a private tmpfs over the storage folder: the folder
    exists there, but it is another. One line naming the node and what to use instead (root only)."""
    import shutil
    import time
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a mount namespace")
    from ray.util import get_node_ip_address
    ray_bin, port = str(Path(sys.executable).parent / "ray"), free_port()
    head_address = f"{get_node_ip_address()}:{port}"  # the head's own IP: given 127.0.0.1, a worker's `ray start`
    # timed out waiting for its node's record (the node had joined)
    folders = {n: Path(tempfile_dir(n)) for n in ("head", "worker", "store")}
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen([ray_bin, "start", "--head", "--num-cpus", "0", "--port", str(port), "--temp-dir",
                             str(folders["head"]), "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = None
    try:
        time.sleep(10)
        inside = (f"mount -t tmpfs tmpfs {folders['store']} && exec {ray_bin} start --address {head_address} "
                  f"--num-cpus 1 --temp-dir {folders['worker']} --block")
        worker = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", inside], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(15)
        if worker.poll() is not None:
            pytest.skip("cannot start a worker node in a mount namespace here")
        proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--address", head_address,
                               "--storage", str(folders["store"]), "--data", str(tmp_path / "never_read")],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: --storage {folders['store']}: worker node ")
        assert "cannot see it" in proc.stderr and "(NFS) or a URI every node reaches" in proc.stderr
        assert "decoding" not in proc.stderr and list(folders["store"].iterdir()) == []
    finally:
        for node in (worker, head):  # `ray start --block` ends its node's processes on SIGTERM
            if node is not None:
                node.terminate()
                node.wait(timeout=60)
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def tempfile_dir(name):
    import tempfile
    return tempfile.mkdtemp(prefix=f"ns{name}_")  # short: Ray's socket paths must fit 107 bytes
