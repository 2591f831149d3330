"""The embedded mode's state folder: every path under it is named here, once.

All state of the embedded mode lives under one folder (default `./.yanjin`), so a user can delete
it and start over: the MLflow database and artifacts, kfp's outputs, the prediction log, drift
reports and the Evidently workspace, fetched data and retraining sets.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path(".yanjin")
DATA_ENV = "YANJIN_DATA"


@dataclass(frozen=True)
class LocalState:
    root: Path = DEFAULT_STATE_DIR

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return str((self.root / "mlartifacts").resolve())

    @property
    def pipeline_root(self) -> str:
        return str((self.root / "kfp").resolve())

    @property
    def prediction_log(self) -> Path:
        return self.root / "predictions.db"

    @property
    def engine_cache(self) -> Path:
        """TensorRT engines of the served models, per model digest and GPU (models.gpu)."""
        return self.root / "trt-engines"

    @property
    def api_keys(self) -> Path:
        return self.root / "api-keys.json"

    @property
    def ab_secret(self) -> Path:
        return self.root / "ab-secret"

    @property
    def ledger(self) -> Path:
        return self.root / "release.db"

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    @property
    def evidently(self) -> Path:
        return self.root / "evidently"

    @property
    def retraining(self) -> Path:
        return self.root / "retraining"

    @property
    def select(self) -> Path:
        return self.root / "select"

    def data(self, name: str) -> Path:
        return self.root / "data" / name


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` whole: a temporary file beside it (created with `mode`), fsynced, renamed over it, the
    folder fsynced; a reader or a crash sees the old file or the new one, never half of either."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)   # the rename itself survives a crash
    finally:
        os.close(folder)


def source_root() -> Path | None:
    """The checkout this package runs from, or None for an installed wheel (no .git beside it)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / ".git").exists() or (root / "pyproject.toml").is_file() else None


def find_data_dir(explicit: Path | None, state: LocalState, name: str = "banking77") -> Path:
    """--data, else $YANJIN_DATA, else a fetched copy under the state folder, else ../shared/data
    beside a checkout. A folder the user named must hold the data: no silent fallback."""
    named = explicit or (Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None)
    if named is not None:
        if not (named / "train.csv").is_file():
            raise FileNotFoundError(f"{named}: no train.csv in this folder")
        return named
    root = source_root()
    candidates = [state.data(name)] + ([root.parent / "shared" / "data" / name] if root else [])
    for c in candidates:
        if (c / "train.csv").is_file():
            return c
    raise FileNotFoundError(f"no {name} data found (looked in {[str(c) for c in candidates]}); "
                            f"run `yanjin data fetch {name}` or pass --data DIR")


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit of the code that runs (`-dirty` with uncommitted changes), else $YANJIN_GIT_COMMIT."""
    cwd = cwd or source_root()
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("YANJIN_GIT_COMMIT", "unknown")
