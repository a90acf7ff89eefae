"""The repository root installs as the package ``backtrack_gym`` (editable and wheel)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import backtrack_gym

ROOT = Path(__file__).resolve().parents[1]


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
    # Every module of the source tree ships (a package missing from pyproject's list would not).
    shipped_dirs = ("agents", "envs", "rewards", "train")
    sources = [path.relative_to(ROOT) for top in shipped_dirs for path in (ROOT / top).rglob("*.py")]
    missing = [str(path) for path in sources if f"backtrack_gym/{path.as_posix()}" not in names]
    assert not missing, missing
    assert not any(name.startswith(("backtrack_gym/tests/", "tests/", "backtrack_gym/bench/")) for name in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import backtrack_gym, gymnasium as gym; "
        f"assert backtrack_gym.__file__.startswith({str(site)!r}), backtrack_gym.__file__; "
        "env = gym.make('backtrack_gym/CountDown-v0'); env.reset(seed=0); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_play_prints_a_table():
    result = subprocess.run(
        [sys.executable, "-m", "backtrack_gym", "play", "--episodes", "5", "--interactions", "completion"],
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
