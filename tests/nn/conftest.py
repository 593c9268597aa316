import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every network test runs with one intra-op thread (tests/conftest.py: one_thread)."""
    yield
