"""What the broker acknowledged to the "other systems", and which broker generation acknowledged it.

A wiped broker loses every record it had acknowledged; a real sender would notice (its own audit, the
recipient's reconciliation) and send them again. The harness does that from this journal. Each record is
journalled the moment its send is acknowledged, tagged with the broker generation of that moment, so a record
acknowledged while the rest of its burst still retries is never missed by a wipe in between (the cause of the
2 commands seed 15 lost: they were journalled only when their whole burst had been acknowledged, after the wipe's
resend had already run). The generation is bumped only once the new, empty broker is up, so an acknowledgement
that might have come from either broker counts as the old one's and is sent again: a duplicate the inboxes drop,
never a loss.

Pure bookkeeping (no broker), unit-tested in tests/unit/test_chaos_journal.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")


@dataclass
class Journal(Generic[R]):
    generation: int = 0
    # One entry per send (a record published twice is two sends): the record and the generation that acked it.
    _acked: dict[int, tuple[R, int]] = field(default_factory=dict)
    _serials: itertools.count[int] = field(default_factory=itertools.count)

    def new_send(self) -> int:
        """A serial for a send; a record sent again after a wipe keeps its serial."""
        return next(self._serials)

    def acknowledged(self, serial: int, record: R) -> None:
        """The broker acknowledged this send (acks=all): as of now it is in the current generation's log."""
        self._acked[serial] = (record, self.generation)

    def broker_wiped(self) -> list[tuple[int, R]]:
        """Call once the new, empty broker is up: starts a generation and returns every send acknowledged by an
        earlier one (also those a previous resend has not got acknowledged again yet), to be sent again."""
        self.generation += 1
        return [(serial, record) for serial, (record, gen) in self._acked.items() if gen < self.generation]

    def lost_if_wiped_now(self) -> int:
        """Sends acknowledged by a generation before the current one and not acknowledged again since."""
        return sum(1 for _, gen in self._acked.values() if gen < self.generation)

    def __len__(self) -> int:
        return len(self._acked)
