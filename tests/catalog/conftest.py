"""Catalog fixtures: the three roots the catalog must work on (local folder, ``memory://``, a real S3 server)."""

from __future__ import annotations

import uuid

import pytest

from catalog.store import Catalog
from tests.s3server import s3_server


@pytest.fixture(scope="session")
def s3():
    """One real S3-compatible server (SeaweedFS, moto as fallback) for the whole session."""
    with s3_server() as server:
        yield server


@pytest.fixture(params=["local", "memory", "s3"])
def any_catalog(request, tmp_path, s3) -> Catalog:
    """A fresh catalog on each kind of root."""
    if request.param == "local":
        return Catalog(tmp_path / "cat")
    if request.param == "memory":
        return Catalog(f"memory://vpf-test-{uuid.uuid4().hex[:8]}")
    return Catalog(s3.url(f"cat-{uuid.uuid4().hex[:8]}"), storage_options=s3.storage_options)


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return Catalog(tmp_path / "cat")
