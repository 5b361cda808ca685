"""Unit tests are pure: starting Ray (or connecting to one) fails loudly."""

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray_init(monkeypatch):
    import ray

    def _refuse(*args, **kwargs):
        raise RuntimeError("unit tests must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", _refuse)
