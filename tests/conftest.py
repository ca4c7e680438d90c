"""Fixtures shared by the tests: the tiny npz data, the tool runner and the real data in ../shared.

Constants and plain helpers that need no fixture are in tests/helpers.py.
"""

import pytest

from tests.helpers import SHARED_DATA, run_tool_in_subprocess, write_tiny_npz


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """("npz:train.npz", "npz:test.npz"): the tiny synthetic data of helpers.write_tiny_npz."""
    root = tmp_path_factory.mktemp("tiny_npz")
    return write_tiny_npz(root / "train.npz", "train"), write_tiny_npz(root / "test.npz", "test")


@pytest.fixture(scope="session")
def run_tool():
    """run_tool(script, *args, timeout=300, tf_log_level="3"): tools/`script` in a subprocess.

    It runs from the repository root and returns the `subprocess.CompletedProcess` with text
    stdout and stderr, whatever the exit status.
    """
    return run_tool_in_subprocess


@pytest.fixture(scope="session")
def shared_data():
    """shared_data(relative): the path of `relative` under ../shared/data; skips when absent."""

    def path(relative):
        found = SHARED_DATA / relative
        if not found.exists():
            pytest.skip(f"shared data not available: {found}")
        return found

    return path
