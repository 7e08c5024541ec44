"""A client library retrying in a loop says so once per kind of failure and window, not ten times a second."""

from __future__ import annotations

import logging

import pytest

from shared.messaging import OncePerKind
from shared.outbox import RepeatedFailureLog


def _record(message: str, level: int = logging.ERROR, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("aiokafka.consumer.group_coordinator", level, __file__, 1, message, (), exc_info)


class TestOncePerKind:
    def test_the_same_failure_again_within_the_window_is_held_back_and_counted(self) -> None:
        once = OncePerKind(every=60)
        template = "OffsetCommit failed for group %s on partition %s with offset %s: %s"
        assert once.filter(_record(template))
        assert [once.filter(_record(template)) for _ in range(50)] == [False] * 50
        assert once.held == {("aiokafka.consumer.group_coordinator", template, ""): 50}

    def test_another_message_or_exception_kind_is_another_failure(self) -> None:
        once = OncePerKind(every=60)
        assert once.filter(_record("Unable connect to %r"))
        assert once.filter(_record("Unable connect to %r", exc=ConnectionRefusedError()))
        assert once.filter(_record("Unable connect to %r", exc=TimeoutError()))
        assert once.filter(_record("Heartbeat failed"))
        assert not once.filter(_record("Heartbeat failed"))

    def test_a_line_after_the_window_says_how_many_were_held_back(self) -> None:
        once = OncePerKind(every=0.0)
        assert once.filter(_record("x"))
        once.every = 60
        assert not once.filter(_record("x"))
        assert not once.filter(_record("x"))
        once.every = 0.0
        later = _record("x")
        assert once.filter(later)
        assert getattr(later, "suppressed_since_last") == 2  # noqa: B009  (set by the filter)

    def test_info_and_debug_pass_untouched(self) -> None:
        once = OncePerKind(every=60)
        assert all(once.filter(_record("joined group", level=logging.INFO)) for _ in range(5))


class TestRepeatedFailureLog:
    def test_logs_the_first_failure_of_a_kind_with_its_stack_then_holds_repeats_back(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        logger = logging.getLogger("test.relay")
        failures = RepeatedFailureLog(logger, "outbox relay failed; retrying", every=60)
        with caplog.at_level(logging.ERROR, logger="test.relay"):
            for _ in range(20):
                failures.failed(TimeoutError("send timed out"), service="payments")
            failures.failed(KeyError("other"), service="payments")
        assert [(r.message, getattr(r, "kind", None)) for r in caplog.records] == [
            ("outbox relay failed; retrying", "TimeoutError"),
            ("outbox relay failed; retrying", "KeyError"),
        ]
        assert caplog.records[0].exc_info is not None
        assert failures.suppressed == {"TimeoutError": 19}
