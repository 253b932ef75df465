"""The openai backend takes a slot of the Prefect global concurrency limit ``llm:<host>`` for every HTTP attempt."""

from __future__ import annotations

import pytest

from tasks.proposers import ProposalRequest, get_proposer
from tests.tasks.proposers.llm_server import TinyChatServer


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow  # starts a Prefect API server (~15 s on an idle machine)
def test_every_attempt_takes_a_rate_limit_slot(tiny_lm, prefect_api) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    request = ProposalRequest("object_1", "clip_1", "car", "A car on a street.", edit_types=("remove",))
    with TinyChatServer(tiny_lm) as server:
        host = server.url.split("//")[1].split("/")[0]
        proposer = get_proposer(f"openai:{server.url}#tiny", rate_limit=True, max_retries=2, backoff_s=0.01)
        with pytest.raises(ValueError, match=f"rate limit 'llm:{host}'.*prefect gcl create"):
            proposer.setup()  # configured but missing: refused before any request

        with get_client(sync_client=True) as client:
            # 10 slots, decaying so slowly that the slots taken are still visible after the run
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=f"llm:{host}", limit=10, slot_decay_per_second=0.001)
            )
            server.faults[:] = ["500", "500", "malformed"]  # 3 attempts, answered without generating
            proposer.setup()
            (outcome,) = proposer.propose([request])
            limit = client.read_global_concurrency_limit_by_name(f"llm:{host}")
    assert server.requests == 3 and [f.reason for f in outcome.failures] == ["llm_bad_response"]
    assert limit.active_slots == 3

    unlimited = get_proposer(f"openai:{server.url}#tiny")
    assert unlimited.model.rate_limit_name is None  # no limit configured: no Prefect call at all
