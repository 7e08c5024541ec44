"""Receipts' render processes run below the service's CPU priority, so a burst of documents to render never takes
the CPU from the consumers and relays that make payments posted and receipts available."""

from __future__ import annotations

import os

from services.receipts.app import render_pool
from services.receipts.settings import ReceiptsSettings


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def _scheduler() -> int:
    return os.sched_getscheduler(0)


def test_render_processes_run_at_the_configured_lower_priority() -> None:
    pool = render_pool(ReceiptsSettings(render_processes=1, render_niceness=7))
    assert pool is not None
    try:
        child = pool.submit(_priority).result(timeout=120)
    finally:
        pool.shutdown(wait=True)
    assert child == min(_priority() + 7, 19)


def test_render_processes_run_only_on_idle_cores_by_default() -> None:
    pool = render_pool(ReceiptsSettings(render_processes=1))
    assert pool is not None
    try:
        child = pool.submit(_scheduler).result(timeout=120)
    finally:
        pool.shutdown(wait=True)
    assert (child, _scheduler()) == (os.SCHED_IDLE, os.SCHED_OTHER)


def test_render_processes_can_stay_in_the_normal_class() -> None:
    pool = render_pool(ReceiptsSettings(render_processes=1, render_idle_only=False))
    assert pool is not None
    try:
        assert pool.submit(_scheduler).result(timeout=120) == os.SCHED_OTHER
    finally:
        pool.shutdown(wait=True)


def test_no_render_processes_renders_in_the_service() -> None:
    assert render_pool(ReceiptsSettings(render_processes=0)) is None
