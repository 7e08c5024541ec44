"""The run's report: seed, faults by kind, inputs, payments, each invariant with its figures; text and JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.invariants import Invariant


@dataclass
class Report:
    seed: int
    settings: dict[str, Any]
    faults: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, dict[str, int]] = field(default_factory=dict)
    http_statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    not_accepted: dict[str, list[str]] = field(default_factory=dict)  # a few answers per kind, for the record
    payments: dict[str, int] = field(default_factory=dict)
    invariants: list[Invariant] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    drain: str = ""

    @property
    def holds(self) -> bool:
        return bool(self.invariants) and all(i.holds for i in self.invariants)

    def faults_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f["kind"] for f in self.faults).items()))

    def text(self) -> str:
        lines = [
            f"Paydesk chaos run, seed {self.seed} (replay: python -m tests.chaos --seed {self.seed} "
            f"{' '.join(f'--{k} {v}' for k, v in self.settings.items() if k in ('minutes', 'payments', 'faults'))})",
            f"timings: {', '.join(f'{k} {v:.0f} s' for k, v in self.timings.items())}; drain: {self.drain}",
            f"faults: {len(self.faults)} ({', '.join(f'{k} {v}' for k, v in self.faults_by_kind().items())})",
        ]
        failed = [f for f in self.faults if f["note"].startswith("could not")]
        if failed:
            lines.append(f"  {len(failed)} could not be injected, e.g. {failed[0]['kind']}: {failed[0]['note']}")
        lines.append("inputs:")
        for kind, outcomes in self.inputs.items():
            lines.append(f"  {kind:<12} {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}")
        for kind, details in self.not_accepted.items():
            lines.extend(f"  {kind} not accepted: {detail}" for detail in details)
        lines.append(
            "HTTP answers seen: "
            + "; ".join(f"{kind} {dict(sorted(codes.items()))}" for kind, codes in self.http_statuses.items())
        )
        lines.append("payments: " + ", ".join(f"{k} {v}" for k, v in self.payments.items()))
        lines.append("invariants:")
        for invariant in self.invariants:
            lines.append(f"  [{'HOLDS' if invariant.holds else 'FAILS'}] {invariant.name}")
            lines.append("      " + ", ".join(f"{k.strip()}: {v}" for k, v in invariant.figures.items()))
            lines.extend(f"      - {p}" for p in invariant.problems)
        lines.append(f"verdict: {'every invariant holds' if self.holds else 'AN INVARIANT FAILED'} (seed {self.seed})")
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        data = asdict(self)
        data["faults_by_kind"] = self.faults_by_kind()
        data["holds"] = self.holds
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
