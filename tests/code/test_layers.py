"""The layers hold: import-linter's contracts (.importlinter), and a serving process without PyTorch."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    out = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and "5 kept" in out.stdout


def test_the_serving_process_imports_no_torch():
    code = ("import sys, yanjin.serving.service, yanjin.serving.predlog; "
            "heavy = sorted(m for m in ('torch', 'kfp', 'great_expectations', 'evidently', 'sklearn') if m in sys.modules); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
