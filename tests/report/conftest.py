"""Fixtures of the report tests: results built from hand-made records."""

from __future__ import annotations

import pytest
from report_fixtures import make_results

from pytest_steer.run.results import RunResults


@pytest.fixture(scope="session")
def results() -> RunResults:
    return make_results()
