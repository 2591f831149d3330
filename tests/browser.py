"""What a person sees: pages rendered by a real browser (Debian's headless Chromium), their text and a
screenshot, and the MLflow UI on a registry. Shared by the tests and benchmarks/screens.py."""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.integration.stack import exited, free_port, stop, wait_http

CHROMIUM = next((p for p in ("chromium", "chromium-browser", "google-chrome") if shutil.which(p)), None)


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        raise RuntimeError("no headless Chromium: sudo apt-get install chromium (make test installs it)")
    with tempfile.TemporaryDirectory() as profile:   # a fresh profile: nothing cached, nothing shared
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def rendered(url: str, screenshot: Path | None = None, wait_ms: int = 15_000, size: str = "1400,1800") -> str:
    """The page's DOM after its scripts ran (`wait_ms` of virtual time), and its screenshot when asked."""
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        _chromium(f"--screenshot={screenshot}", f"--window-size={size}", f"--virtual-time-budget={wait_ms}", url)
    return _chromium("--dump-dom", f"--virtual-time-budget={wait_ms}", url).stdout


def text_of(dom: str) -> str:
    """The rendered page's visible text, cells separated by ' | ' and rows by newlines."""
    dom = re.sub(r"(?is)<(script|style)\b.*?</\1>", "", dom)
    dom = re.sub(r">\s+<", "><", dom)   # the markup's own line breaks are not the page's
    dom = re.sub(r"(?i)</t[dh]>", " | ", dom)
    dom = re.sub(r"(?i)</tr>|<br\s*/?>|</p>|</h\d>|</li>|</div>", "\n", dom)
    return html.unescape(re.sub(r"<[^>]+>", "", dom))


def external_assets(dom: str) -> list[str]:
    """Scripts, styles, images and frames the page loads from another host."""
    return re.findall(r"""(?i)<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["'](https?://[^"']+)""", dom)


@contextmanager
def mlflow_ui(tracking_uri: str, artifacts: str | None = None) -> Iterator[str]:
    """The MLflow UI (a real `mlflow server`) on a registry; yields its URL."""
    port = free_port()
    args = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", tracking_uri,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if artifacts:
        args += ["--artifacts-destination", artifacts]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_http(f"{url}/health", exited(proc, proc.stderr.read), 120):
            raise RuntimeError("the MLflow server never answered")
        yield url
    finally:
        stop(proc)


def version_page(ui: str, model: str, version: str) -> str:
    return f"{ui}/#/models/{model}/versions/{version}"
