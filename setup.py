"""Package discovery for the layout where the repository root is the package ``backtrack_gym``.

The rest of the build is in pyproject.toml. ``find_packages`` names the packages below the
root (``envs``, ``envs.countdown``, ...), each shipped as ``backtrack_gym.<name>``; folders
with no ``__init__.py`` (docs/, bench/, runs/, configs/) are none, and tests/, bench/ and
build/ are left out should they become one.
"""

from pathlib import Path

from setuptools import find_packages, setup

NOT_SHIPPED = ["tests", "bench", "build"]
SUBPACKAGES = find_packages(
    where=str(Path(__file__).resolve().parent), exclude=[*NOT_SHIPPED, *(f"{name}.*" for name in NOT_SHIPPED)]
)

# Every *.py of the root ships but the setup script, which build_py knows by script_name
# (relative to the project folder, where builds run; the default, sys.argv[0], is the build frontend's).
setup(packages=["backtrack_gym", *(f"backtrack_gym.{name}" for name in SUBPACKAGES)], script_name="setup.py")
