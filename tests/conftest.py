"""Fixtures shared by the test files; plain helpers (compose, CLI runner, fast overrides) are in
helpers.py. Session-scoped fixtures build an object once for the whole run: tests must treat
what they get as read-only."""

from __future__ import annotations

import pytest

from ddrm_exp.models.base import DiffusionPrior


@pytest.fixture(scope="session")
def tiny_prior() -> DiffusionPrior:
    """The bundled tiny ADM prior (64 px), loaded from the package, no network."""
    import ddrm_exp

    return ddrm_exp.load_prior("tiny")
