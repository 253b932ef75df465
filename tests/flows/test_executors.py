"""The executors' shared pieces: the per-worker GPU limit is created once, whichever render creates it first."""

from __future__ import annotations

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound

from flows.executors import ensure_concurrency_limit


def test_two_renders_creating_the_gpu_limit_at_once_both_go_on(monkeypatch) -> None:
    """Both renders read "no such limit" before either creates it (forced here): the second create meets the first's
    limit and goes on, keeping the first's slots (an operator's or the first render's setting wins)."""
    name = "gpu:test-race"

    def absent(self, limit_name: str):
        raise ObjectNotFound(http_exc=Exception(limit_name))

    read = SyncPrefectClient.read_global_concurrency_limit_by_name
    monkeypatch.setattr(SyncPrefectClient, "read_global_concurrency_limit_by_name", absent)
    ensure_concurrency_limit(name, 2)
    ensure_concurrency_limit(name, 5)  # raised ObjectAlreadyExists before, failing that render's flow run
    monkeypatch.setattr(SyncPrefectClient, "read_global_concurrency_limit_by_name", read)
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).limit == 2
        client.delete_global_concurrency_limit_by_name(name)
