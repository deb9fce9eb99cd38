"""fusionkit as an installed library: the wheel holds the package's configurations, and
the installed ``fusionkit`` command trains, predicts and streams from an empty folder
outside the checkout, with nothing of the checkout importable."""

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
    ]
    subprocess.run([*cmd, str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("fusionkit_mer-*.whl")
    return whl


def test_the_wheel_holds_the_package_and_its_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    configs = {Path(n).name for n in names if n.startswith("fusionkit/models/cmath/configs/")}
    assert configs == {p.name for p in (ROOT / "fusionkit/models/cmath/configs").glob("*.toml")}
    assert "fusionkit/cli.py" in names and "fusionkit/models/cmath/train.py" in names
    assert not any(n.startswith(("examples/", "tests/", "bench/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fusionkit = fusionkit.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_installed_command_trains_predicts_and_streams_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python, command = env_dir / "bin" / "python", env_dir / "bin" / "fusionkit"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*argv):
        done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = run(python, "-c", "import fusionkit; print(fusionkit.__file__)")
    assert str(env_dir) in where and str(ROOT) not in where  # the wheel's copy, not the checkout
    causal = [*TINY, "--set", "model.causal=true", "--epochs", "1", "--out", "run"]
    run(command, "train", *causal)
    run(command, "predict", "run/seed0/best.pt", "--split", "test", "--out", "pred")
    report = json.loads((work / "pred" / "report.json").read_text())
    assert report["support"] > 0
    stream = (
        "import numpy as np\n"
        "from fusionkit.models.cmath import Predictor\n"
        "p = Predictor.from_checkpoint('run/seed0/best.pt')\n"
        "s = p.stream()\n"
        "dims = p.model.spec.input_dims\n"
        "steps = [s.push({m: np.zeros(w) for m, w in dims.items()}, speaker='a') for _ in range(3)]\n"
        "print([step.position for step in steps])\n"
    )
    assert run(python, "-c", stream).strip() == "[0, 1, 2]"
