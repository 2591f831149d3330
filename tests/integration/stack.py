"""The cluster's servers, started for real on this machine: a throwaway PostgreSQL cluster and
`mlflow server` on it with basic auth and proxied artifacts. Used by the integration test and by
`infra/rehearse.py` (the same code, so what CI checks is what the rehearsal runs)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_http(url: str, died: Callable[[], str | None], timeout: float = 120) -> bool:
    """Poll `url` until it answers 200 (True) or `timeout` passes (False); `died()` says why the server
    behind it is gone (then this raises), or None while it runs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if (why := died()) is not None:
            raise RuntimeError(why)
        time.sleep(0.5)
    return False


def exited(proc: subprocess.Popen, log: Callable[[], str] = lambda: "") -> Callable[[], str | None]:
    """For wait_http: the process's exit, with the tail of its log."""
    return lambda: None if proc.poll() is None else f"{proc.args} exited with {proc.returncode}: {log()[-3000:]}"


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise FileNotFoundError("PostgreSQL not installed: `make test` installs Debian's postgresql package")
    return found[-1].parent


def as_postgres_user(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` account then."""
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)] if os.geteuid() == 0 else args


@contextlib.contextmanager
def postgres(databases: tuple[str, ...] = ("mlflow", "mlflow_auth", "predictions", "release")) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port; yields a URL prefix ending in host:port/. Its
    folder is outside pytest's root-only temporary tree, which the postgres account cannot enter."""
    folder = Path(tempfile.mkdtemp(prefix="yanjin-pg-"))
    data, port = folder / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    bin_dir = pg_bin()
    made = subprocess.run(as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "yanjin", "--auth=trust"]),
                          capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"initdb failed: {made.stderr[-2000:]}")
    start = as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                              f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"])
    stop = as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    subprocess.run(start, check=True, capture_output=True)
    _CLUSTERS[f"postgresql://yanjin@127.0.0.1:{port}/"] = (start, stop)
    try:
        for db in databases:
            subprocess.run(as_postgres_user([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                             "yanjin", db]), check=True, capture_output=True)
        yield f"postgresql://yanjin@127.0.0.1:{port}/"
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


_CLUSTERS: dict[str, tuple[list[str], list[str]]] = {}  # postgres() URL -> its pg_ctl start and stop


@contextlib.contextmanager
def outage(url: str) -> Iterator[None]:
    """The cluster behind a postgres() URL stopped for the body of the with-block, then started again."""
    start, stop = _CLUSTERS[url]
    subprocess.run(stop, check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(start, check=True, capture_output=True)


@dataclass(frozen=True)
class MlflowServer:
    url: str
    username: str
    password: str
    artifacts: Path     # where the server keeps the artifacts it proxies

    @property
    def credentials(self) -> dict[str, str]:
        """The environment a client (a step, a server) authenticates with."""
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


@contextlib.contextmanager
def mlflow_server(postgres_url: str, folder: Path) -> Iterator[MlflowServer]:
    """`mlflow server` with the basic-auth app, metadata and users in PostgreSQL, artifacts proxied
    (clients never see the artifact folder: they upload and download over HTTP)."""
    password = "yanjin-" + os.urandom(8).hex()
    ini = folder / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {postgres_url}mlflow_auth\n"
                   f"admin_username = admin\nadmin_password = {password}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port, artifacts = free_port(), folder / "artifacts"
    env = os.environ | {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                             "--backend-store-uri", f"{postgres_url}mlflow", "--artifacts-destination",
                             artifacts.as_uri(), "--serve-artifacts", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(folder / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_http(f"{url}/health", exited(proc, (folder / "server.log").read_text)):
            raise RuntimeError(f"mlflow server never answered on {url}")
        yield MlflowServer(url, "admin", password, artifacts)
    finally:
        stop(proc)
