"""One module owns MLflow access (`biomedclip.tracking`): which store, the client, downloads.
Real MLflow stores (SQLite files), in this process."""

from __future__ import annotations

import os

import mlflow
import pytest

from biomedclip.tracking import TrackingParams, connect, tracking_uri

pytestmark = pytest.mark.unit


@pytest.fixture
def stores(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    previous = mlflow.get_tracking_uri()
    yield [TrackingParams(uri=f"sqlite:///{tmp_path / name}.db") for name in ("a", "b")]
    mlflow.set_tracking_uri(previous)


def test_connecting_to_one_store_never_redirects_the_next(stores):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which would make a later connect
    (and every child process) use the first store, whatever its params say."""
    a, b = stores
    connect(a).create_registered_model("only-in-a")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = connect(b)
    assert tracking_uri(b) == b.uri and mlflow.get_tracking_uri() == b.uri
    assert [m.name for m in client.search_registered_models()] == []
    assert [m.name for m in connect(a).search_registered_models()] == ["only-in-a"]


def test_the_users_variable_wins_and_is_left_as_it_was(stores, monkeypatch):
    a, b = stores
    monkeypatch.setenv("MLFLOW_TRACKING_URI", b.uri)
    connect(a)
    assert os.environ["MLFLOW_TRACKING_URI"] == b.uri and mlflow.get_tracking_uri() == b.uri
