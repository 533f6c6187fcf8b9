"""The crash automation `flowship up` keeps on a Prefect server: made once, its wait changed only when asked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flowship.services.prefect_api import ensure_zombie_automation

pytestmark = pytest.mark.integration
NAME = "flowship tests: crash flow runs that stopped sending heartbeats"


def within(name: str) -> float:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(name)
        return automation.trigger.within.total_seconds()  # type: ignore[union-attr]


@pytest.fixture
def automation(prefect_harness: None) -> Iterator[str]:
    yield NAME
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for found in client.read_automations_by_name(NAME):
            client.delete_automation(found.id)


def test_created_once_then_changed_only_when_another_wait_is_asked(automation: str) -> None:
    assert ensure_zombie_automation(automation, 50) == ("created", 50)
    assert ensure_zombie_automation(automation, 50) == ("exists", 50)
    assert within(automation) == 50
    # `flowship schedule`, or `flowship up` without --crash-after: the server's own wait stays
    assert ensure_zombie_automation(automation, 90, keep=True) == ("exists", 50)
    assert within(automation) == 50
    assert ensure_zombie_automation(automation, 120) == ("updated from 50 s", 120)
    assert within(automation) == 120
