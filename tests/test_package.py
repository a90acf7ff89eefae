"""The repository root installs as the package ``backtrack_gym`` (editable and wheel)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import backtrack_gym

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = ("tests", "bench", "runs", "build", "docs", "examples")


def test_editable_install_exposes_the_package():
    assert Path(backtrack_gym.__file__).resolve().parent == ROOT
    assert backtrack_gym.__version__


@pytest.mark.slow
def test_wheel_contains_the_package_and_imports(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("backtrack_gym-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "backtrack_gym/__init__.py" in names
    # Every module of the source tree ships: the root's and every package's below it (setup.py
    # finds them, so a new package needs no list), and the configs as package data.
    packages = [path for path in ROOT.iterdir() if (path / "__init__.py").is_file() and path.name not in NOT_SHIPPED]
    sources = [path for path in ROOT.glob("*.py") if path.name != "setup.py"]
    sources += [path for package in packages for path in package.rglob("*.py")]
    sources += list((ROOT / "configs").rglob("*.yaml"))
    assert {"envs", "rewards", "agents", "train"} <= {package.name for package in packages}
    missing = [str(path) for path in sources if f"backtrack_gym/{path.relative_to(ROOT).as_posix()}" not in names]
    assert not missing, missing
    assert "backtrack_gym/configs/main.yaml" in names
    assert any(name.startswith("backtrack_gym/configs/experiments/") and name.endswith(".yaml") for name in names)
    assert "backtrack_gym/setup.py" not in names
    assert not [name for name in names if set(name.split("/")[:2]) & set(NOT_SHIPPED)]
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import backtrack_gym, gymnasium as gym; "
        f"assert backtrack_gym.__file__.startswith({str(site)!r}), backtrack_gym.__file__; "
        "env = gym.make('backtrack_gym/CountDown-v0'); env.reset(seed=0); "
        "from importlib.resources import files; "
        "assert files('backtrack_gym').joinpath('configs/main.yaml').is_file(); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_play_prints_a_table():
    result = subprocess.run(
        [sys.executable, "-m", "backtrack_gym", "play", "--episodes", "5", "--episode.interaction", "completion"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert "solve_rate" in lines[1]
    oracle_rows = [line for line in lines if line.split()[0] == "oracle"]
    assert len(oracle_rows) == 2 and all(row.split()[4] == "1.000" for row in oracle_rows)


def test_cli_rejects_bad_config_values():
    result = subprocess.run(
        [sys.executable, "-m", "backtrack_gym", "play", "--episodes", "many"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "episodes" in result.stderr
