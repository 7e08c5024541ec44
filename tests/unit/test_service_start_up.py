"""What a service does once it has started, before it serves anything."""

from __future__ import annotations

import asyncio
import gc

import pytest

import shared.service
from services.payments.app import create_service as create_payments
from services.payments.settings import PaymentsSettings
from shared.settings import DEVELOPMENT_JWT_SECRET


class TestStartUp:
    async def test_freezes_the_start_up_heap_once_start_up_is_done(self, monkeypatch: pytest.MonkeyPatch) -> None:
        service = create_payments(PaymentsSettings(jwt_secret=DEVELOPMENT_JWT_SECRET, development=True))
        done: list[str] = []

        async def renew_producer() -> None:
            done.append("producer")

        async def start_broker() -> None:
            done.append("consumers")

        async def relay() -> None:
            await asyncio.Event().wait()

        frozen: list[list[str]] = []
        monkeypatch.setattr(service.relay, "renew_producer", renew_producer)
        monkeypatch.setattr(service.relay, "run", relay)
        monkeypatch.setattr(service.broker, "start", start_broker)
        monkeypatch.setattr(gc, "freeze", lambda: frozen.append(list(done)))
        try:
            await service.start()
        finally:
            for task in (service._relay_task, service._watch_task, service._lag_task):
                if task is not None:
                    task.cancel()
            await service.engine.dispose()
        assert frozen == [["producer", "consumers"]]

    def test_leaves_later_objects_to_the_collector_which_looks_at_young_ones_less_often(self) -> None:
        gc.unfreeze()
        before = gc.get_freeze_count()
        thresholds = gc.get_threshold()
        try:
            shared.service.settle_the_heap()
            assert gc.get_freeze_count() > before
            assert gc.get_threshold() == (shared.service.YOUNG_COLLECTION_EVERY, *thresholds[1:])
            garbage: list[object] = []
            garbage.append(garbage)  # a cycle made after the freeze
            del garbage
            assert gc.collect() >= 1
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
