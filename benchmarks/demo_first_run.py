"""A newcomer's first hour, measured: `make demo` in a fresh clone, run in a real terminal (tmux), the
screen read back as a person sees it.

    python benchmarks/demo_first_run.py  ->  benchmarks/results/demo.json and demo_screen.txt

The clone goes beside the checkout (so ../shared/data is found as in a user's checkout); `make install`
is timed apart from `make demo`. `script` records every byte the terminal received
(`demo_terminal_bytes`, in-place redraws of the progress line included); `demo_output_bytes` is what
stays on the screen and in its scrollback once those redraws are applied: the text a person reads.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SESSION = "yanjin-demo"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def rendered(raw: str) -> str:
    """The text left after a terminal applies carriage returns and line clears: each line's last redraw."""
    lines = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        lines.append(ANSI.sub("", line.split("\r")[-1]))
    return "\n".join(lines)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def main() -> None:
    for tool in ("tmux", "script", "git", "make"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (Debian: apt-get install {tool})")
    out_dir = ROOT / "benchmarks" / "results"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    # beside the checkout, as a user's clone sits beside ../shared/data; removed afterwards
    clone = Path(tempfile.mkdtemp(dir=ROOT.parent, prefix="demo-clone-"))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        start = time.perf_counter()
        subprocess.run(["make", "install"], cwd=clone, check=True, capture_output=True)
        install_seconds = time.perf_counter() - start
        typescript, done = Path(tmp) / "typescript", Path(tmp) / "exit"
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
        command = f"cd {clone} && script -qefc 'make demo' {typescript}; echo $? > {done}; sleep 3600"
        tmux("new-session", "-d", "-s", SESSION, "-x", "150", "-y", "50", command)
        start, screens = time.perf_counter(), []
        while not done.is_file():
            time.sleep(30)
            screen = tmux("capture-pane", "-p", "-t", SESSION)
            if "▸" in screen and "[" in screen and len(screens) < 3:  # a bar on screen: keep a few mid-run views
                screens.append((round(time.perf_counter() - start), screen))
        demo_seconds = time.perf_counter() - start
        final = tmux("capture-pane", "-p", "-S", "-400", "-t", SESSION)   # with the scrollback
        tmux("kill-session", "-t", SESSION)
        raw = typescript.read_bytes().decode("utf-8", "replace")
        exit_code = int(done.read_text().strip() or -1)
    shutil.rmtree(clone, ignore_errors=True)
    text = rendered(raw)
    figures = {"commit": commit, "exit_code": exit_code, "demo_seconds": round(demo_seconds),
               "install_seconds": round(install_seconds), "demo_output_bytes": len(text.encode()),
               "demo_output_lines": text.count("\n"), "demo_terminal_bytes": len(raw.encode()),
               "cores": os.cpu_count(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "before": {"demo_output_bytes": 265_000, "note": "issue 18: 265 KB for the first two members alone"}}
    (out_dir / "demo.json").write_text(json.dumps(figures, indent=2) + "\n")
    views = "".join(f"=== the terminal {s} s into `make demo` ===\n{v.rstrip()}\n\n" for s, v in screens)
    (out_dir / "demo_screen.txt").write_text(views + f"=== the terminal at the end (with scrollback) ===\n{final.rstrip()}\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {out_dir / 'demo.json'} and demo_screen.txt")
    sys.exit(0 if exit_code == 0 else 1)


if __name__ == "__main__":
    main()
