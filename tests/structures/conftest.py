"""Fixtures of the core's tests."""
import pytest

import structures


@pytest.fixture(scope="module")
def juice():
    """pyjuice itself (the tests that need it are skipped without it)."""
    return pytest.importorskip("pyjuice")


@pytest.fixture
def hmm_file(tmp_path):
    """A small HMM saved as a .jpc file."""
    path = tmp_path / "hmm.jpc"
    structures.save_jpc(structures.hmm(4, 4, 3, seed=1), path)
    return path
