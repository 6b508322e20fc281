"""Where experiments live: a local or NFS folder, or a URI that pyarrow resolves (s3://BUCKET/PATH, gs://...,
with its query parameters: `?region=...&endpoint_override=http://HOST:PORT` for an S3-compatible server).

For a folder, an experiment is the folder STORAGE/NAME and everything here is a no-op. For a URI, Ray writes its
files there itself, and this project works in a local copy of the experiment (its search.yaml, Optuna journal,
tables, report, run_best's output: `folder`), uploaded as the search goes (`push`); readers download an
experiment's records into that copy (`pull`) and read it like a folder. Credentials come from the environment
(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, for S3) or from the URI (s3://KEY:SECRET@BUCKET/PATH);
what this module shows of a URI hides any credential written into it.
"""
import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

from tune_cvae.common import UserError, check_writable

SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
SECRET_PARAMS = re.compile(r"((?:access_key|secret_key|session_token)=)[^&]*", re.IGNORECASE)
USER_INFO = re.compile(r"(://)[^/@?]+@")  # s3://ACCESS_KEY:SECRET_KEY@BUCKET/PATH, as pyarrow takes them
SPACE_FLOOR = 16 << 20  # bytes a search leaves free on its storage at the least (Ray's last save, the tables)
CREDENTIAL_HINT = {"s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
                   "gs": "set GOOGLE_APPLICATION_CREDENTIALS"}


def is_uri(text):
    """A URI with a scheme (s3://, gs://, ...), not a path."""
    return bool(SCHEME.match(str(text))) and not str(text).lower().startswith("file://")


def shown(uri):
    """A URI as messages show it: credentials in it (KEY:SECRET@, access_key=, secret_key=, session_token=)
    replaced by ***."""
    return USER_INFO.sub(r"\1***@", SECRET_PARAMS.sub(r"\1***", str(uri)))


def split_uri(uri):
    """(scheme://bucket/path, ?query or "") of a URI."""
    base, sep, query = str(uri).partition("?")
    return base.rstrip("/"), sep + query


def cache_root():
    """Local copies of experiments kept in URIs (beside the decoded datasets' cache)."""
    from tune_cvae.lab.data import cache_root as data_cache
    return data_cache() / "experiments"


class Storage:
    """A storage root: local (a folder) or remote (a URI); see the module's docstring."""

    def __init__(self, where, flag="--storage"):
        self.flag, self.remote = flag, is_uri(where)
        if not self.remote:
            self._root = Path(str(where).removeprefix("file://")).expanduser().resolve()
            return
        self.base, self.query = split_uri(where)
        self.scheme = self.base.split("://")[0].lower()
        try:
            import pyarrow.fs
            self.fs, self.path = pyarrow.fs.FileSystem.from_uri(str(where))
        except (ValueError, OSError, TypeError) as e:
            raise UserError(f"{flag} {shown(where)}: not a storage URI pyarrow can open ({first_line(e)})") from None
        self.key = f"{self.scheme}-{hashlib.sha256(self.base.encode()).hexdigest()[:12]}"

    @property
    def root(self):
        """The local folder of its experiments: the folder itself, or for a URI this machine's cache of copies
        (looked up when used: a search resumed on another machine finds its own)."""
        return cache_root() / self.key if self.remote else self._root

    def __str__(self):
        return shown(f"{self.base}{self.query}") if self.remote else str(self.root)

    def uri(self, name):
        """The experiment `name` as Ray and the readers take it: STORAGE/NAME (a URI keeps its query after it)."""
        return f"{self.base}/{name}{self.query}" if self.remote else str(self.root / name)

    def folder(self, name):
        """The local folder of experiment `name`: the experiment itself, or a URI experiment's local copy."""
        return self.root / name

    def ray_storage(self):
        """What Ray's RunConfig.storage_path takes for experiments here."""
        return f"{self.base}{self.query}" if self.remote else str(self.root)

    def check(self):
        """Prove before any work that the storage takes a file from here: a folder with SPACE_FLOOR free, a URI
        whose credentials are there and accepted. UserError naming the problem (and the variable to set)."""
        if not self.remote:
            check_writable(self.root, self.flag)
            existing = next(p for p in [self.root, *self.root.parents] if p.exists())
            free = shutil.disk_usage(existing).free
            if free < SPACE_FLOOR:
                raise UserError(f"{self.flag} {self.root}: {free >> 10} KB free; a search keeps at least "
                                f"{SPACE_FLOOR >> 20} MB free there for its checkpoints and state")
            return
        self.credentials_present()
        probe = f"{self.path}/.tune_cvae_probe.{uuid.uuid4().hex}"
        try:
            with self.fs.open_output_stream(probe) as f:
                f.write(b"tune_cvae storage probe")
            self.fs.delete_file(probe)
        except OSError as e:
            raise UserError(self.explain(e)) from None

    def credentials_present(self):
        """For an S3-compatible server (endpoint_override), credentials in the environment or a profile: without
        any, the AWS SDK would look for an EC2 instance's, which no such server has."""
        if self.scheme != "s3" or "endpoint_override" not in self.query:
            return
        sources = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE")
        if not any(os.environ.get(v) for v in sources) and not (Path.home() / ".aws" / "credentials").is_file() \
                and not USER_INFO.search(self.base):
            raise UserError(f"{self.flag} {self}: no credentials for it: {CREDENTIAL_HINT['s3']}")

    def explain(self, error):
        """One line for a storage error: credentials refused, the server unreachable, no such bucket, or the
        error's first line; never a credential."""
        text, hint = first_line(error), CREDENTIAL_HINT.get(self.scheme, "check its credentials")
        if re.search(r"NETWORK_CONNECTION|connect|resolve host|timed out|curl", text, re.I):
            return f"{self.flag} {self}: unreachable ({text})"
        if re.search(r"ACCESS_DENIED|INVALID_ACCESS_KEY|SIGNATURE|credential|Forbidden|\b403\b", text, re.I):
            return f"{self.flag} {self}: the credentials were refused ({text}); {hint}"  # (a probe's name has hex)
        if re.search(r"NO_SUCH_BUCKET|NoSuchBucket", text, re.I):
            return f"{self.flag} {self}: no such bucket ({text})"
        return f"{self.flag} {self}: {text}"

    def has(self, name):
        """Is there anything at experiment `name` already?"""
        if not self.remote:
            return self.folder(name).exists()
        import pyarrow.fs
        try:
            return self.fs.get_file_info(f"{self.path}/{name}").type != pyarrow.fs.FileType.NotFound
        except OSError as e:
            raise UserError(self.explain(e)) from None

    def reachable(self, name):
        """Can the experiment's search.yaml still be read (a cheap request to a remote storage)? True for a folder."""
        if not self.remote:
            return True
        try:
            return self.fs.get_file_info(f"{self.path}/{name}/search.yaml").size is not None
        except OSError:
            return False

    def push(self, name, items):
        """Upload files or folders of the local copy (paths relative to it) into the experiment in storage."""
        if not self.remote:
            return
        import pyarrow.fs
        local = pyarrow.fs.LocalFileSystem()
        for item in items:
            source = self.folder(name) / item
            if source.exists():
                try:
                    pyarrow.fs.copy_files(str(source), f"{self.path}/{name}/{item}", source_filesystem=local,
                                          destination_filesystem=self.fs)
                except OSError as e:
                    raise UserError(self.explain(e)) from None

    def pull(self, name, skip=("checkpoint_",)):
        """Download the experiment's files into the local copy, but for folders whose names start as `skip` says
        (checkpoints: downloaded when needed); returns the local copy. UserError where there is no experiment."""
        if not self.remote:
            return self.folder(name)
        import pyarrow.fs
        try:
            found = self.fs.get_file_info(pyarrow.fs.FileSelector(f"{self.path}/{name}", recursive=True))
        except FileNotFoundError:
            raise UserError(f"{shown(self.uri(name))}: no experiment there") from None
        except OSError as e:
            raise UserError(self.explain(e)) from None
        for info in found:
            relative = info.path[len(f"{self.path}/{name}/"):]
            if info.type == pyarrow.fs.FileType.File and not any(p.startswith(skip) for p in relative.split("/")):
                self.download(info.path, self.folder(name) / relative)
        return self.folder(name)

    def download(self, remote_path, target):
        """One file of the storage into `target`, written whole."""
        from tune_cvae.common import write_whole
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.fs.open_input_stream(remote_path) as f:
                write_whole(target, f.read())
        except OSError as e:
            raise UserError(self.explain(e)) from None

    def pull_checkpoints(self, name, trial_dir):
        """Download one trial's checkpoints into the local copy (run_best --from-checkpoint, the race)."""
        if self.remote:
            self.pull(f"{name}/{Path(trial_dir).name}", skip=())

    def experiments(self):
        """The names of the experiments here (folders with a search.yaml), newest first."""
        if not self.remote:
            found = sorted(self.root.glob("*/search.yaml"), key=lambda p: p.parent.stat().st_mtime, reverse=True)
            return [p.parent.name for p in found]
        import pyarrow.fs
        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True))
            found = [(i.base_name, self.fs.get_file_info(f"{i.path}/search.yaml")) for i in infos
                     if i.type == pyarrow.fs.FileType.Directory]
        except OSError as e:
            raise UserError(self.explain(e)) from None
        return [n for n, info in sorted(found, key=lambda x: x[1].mtime or 0, reverse=True) if info.size is not None]


def experiment_at(where, flag="--experiment"):
    """(Storage, name) of an experiment given as a folder or as a URI STORAGE/NAME[?query]."""
    if not is_uri(where):
        folder = Path(where).expanduser().resolve()
        return Storage(folder.parent, flag), folder.name
    base, query = split_uri(where)
    root, _, name = base.rpartition("/")
    if not name or root.endswith(":/"):
        raise UserError(f"{flag} {shown(where)}: name an experiment inside the storage (STORAGE/NAME)")
    return Storage(root + query, flag), name


def first_line(error):
    """An error's first line, any credential in it hidden."""
    return shown((str(error).strip().splitlines() or [type(error).__name__])[0][:300])
