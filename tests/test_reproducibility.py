"""The set-up installs the versions the published figures were measured with, and runs record them."""

import importlib.metadata
from pathlib import Path

import pytest

pytest.importorskip("torch")

from backtrack_gym.train.common import RECORDED_PACKAGES, run_environment  # noqa: E402

CONSTRAINTS = Path(__file__).parents[1] / "constraints.txt"


def pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def test_constraints_pin_every_recorded_package_and_the_cpu_torch():
    pinned = pins()
    assert set(RECORDED_PACKAGES) <= set(pinned)
    assert pinned["torch"].endswith("+cpu")


def test_installed_versions_are_the_pinned_ones():
    """`make setup` installs from constraints.txt, so the versions it measured with are the ones here."""
    pinned = pins()
    installed = {name: importlib.metadata.version(name) for name in RECORDED_PACKAGES}
    assert installed == {name: pinned[name] for name in RECORDED_PACKAGES}


def test_run_environment_records_versions_and_threads():
    record = run_environment()
    assert record["packages"]["torch"] == importlib.metadata.version("torch")
    assert record["torch_threads"] >= 1 and record["python"].count(".") == 2
