"""Shared fixtures. Tests that need the default model (all-MiniLM-L6-v2) use `model_db`: when
the model is not installed (`latentdb model fetch`), they are skipped locally with the reason,
and fail under CI (CI=true), where a missing model is a broken setup."""

import os
from pathlib import Path

import pytest

import latentdb

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture
def db(tmp_path):
    d = latentdb.open(tmp_path / "db")
    yield d
    d.flush()


def require_default_model():
    if latentdb.default_model_path() is not None:
        return
    reason = (
        "the default model is not installed: run `latentdb model fetch` "
        "(cargo run -p latentdb-cli -- model fetch) or latentdb.fetch_default_model()"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: a missing model fails)")
    pytest.skip(reason)


@pytest.fixture
def model_db(tmp_path):
    require_default_model()
    d = latentdb.open(tmp_path / "mdb")
    yield d
    d.flush()
