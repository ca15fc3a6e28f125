"""A re-encode of the models for new item features that keeps failing is retried with
exponential, capped back-off, not every second forever."""

from __future__ import annotations

from typing import Any

import pytest

from service import registry as registry_module
from service.lifecycle import open_store
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry, retry_delay
from service.settings import Settings
from tests.helpers import service as sf


def test_retry_delay_doubles_and_is_capped():
    delays = [retry_delay(n) for n in range(10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == 60.0 and max(delays) == 60.0
    assert retry_delay(10_000) == 60.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("svc-backoff"))


def test_failed_rebinds_are_counted_and_a_success_resets_them(world, monkeypatch):
    settings = Settings(
        repo=world["repo"], features_dir=world["data"], reload_interval_s=0, item_refresh_s=0
    )
    store = open_store(settings)
    reg = ModelRegistry(settings, store, ServiceMetrics())
    reg.reload()
    for model in reg.snapshot().values():
        object.__setattr__(model, "items_complete", False)  # forces a re-encode
    original = reg._bind

    def failing(*args: Any, **kwargs: Any):
        raise ValueError("item table does not fit")

    monkeypatch.setattr(reg, "_bind", failing)
    reg.refresh_items()
    reg.refresh_items()
    assert reg.rebind_failures == 4  # two stages, twice
    assert registry_module.retry_delay(reg.rebind_failures) == 16.0
    monkeypatch.setattr(reg, "_bind", original)
    assert reg.refresh_items()
    assert reg.rebind_failures == 0
