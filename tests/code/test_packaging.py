"""What a cluster runs is the built wheel, not this checkout: install it non-editable into a fresh
environment and import every module from the repository root and from elsewhere."""
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def source_modules() -> set[str]:
    mods = set()
    for path in (ROOT / "yanjin").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        mods.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return mods - {"yanjin.cli.__main__"}  # running it starts the CLI


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the wheel installed; the dependencies are seen from this venv's site-packages
    through a plain path entry, which does not run this venv's editable-install finder."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(ROOT)], check=True)
    wheel = next((tmp / "dist").glob("yanjin-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "dev-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps", str(wheel)],
                   check=True)
    return wheel, py, Path(site)


def test_the_wheel_holds_every_module_and_the_profiles(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")}
    assert source_modules() <= in_wheel, sorted(source_modules() - in_wheel)
    assert {"yanjin/configs/tiny.yaml", "yanjin/configs/demo.yaml", "yanjin/configs/full.yaml"} <= set(names)


IMPORT_ALL = """
import importlib, json, sys
mods = json.loads(sys.argv[1])
for m in mods:
    importlib.import_module(m)
import yanjin
from yanjin.config import load_config
load_config("tiny")
print(json.dumps({"file": yanjin.__file__, "n": len(mods)}))
"""


@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_every_module_imports_from_the_installed_wheel(installed, where, tmp_path):
    _, py, site = installed
    cwd = ROOT if where == "repository root" else tmp_path
    mods = sorted(source_modules())
    out = subprocess.run([py, "-c", IMPORT_ALL, json.dumps(mods)], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["n"] == len(mods) > 60
    if where == "elsewhere":  # nothing of the checkout is on the path: this is the installed package
        assert found["file"].startswith(str(site))


def test_a_kubeflow_step_imports_from_the_image_working_directory(installed):
    """The shipped image's first step failed with `No module named 'yanjin.components'`: the source
    folder in its working directory shadowed the installed package. Run the validate step's imports
    the way kfp's executor does (`python -m`, working directory = the repository root)."""
    _, py, _ = installed
    code = "from yanjin.components.stages import validate_and_split; from yanjin.config import PipelineConfig"
    out = subprocess.run([py, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
