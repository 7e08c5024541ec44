"""`python -m tests.chaos --minutes 10 --seed 7`: the long chaos run, on demand (see tests/chaos/__init__.py)."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

from tests.chaos.faults import DEFAULT_KINDS, KINDS
from tests.chaos.run import ChaosSettings, run_chaos


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="replays the same schedule (default: a random one)")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults land while the inputs arrive")
    parser.add_argument("--payments", type=int, default=20_000, help="payment inputs (mostly lockbox commands)")
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument(
        "--faults",
        default=",".join(DEFAULT_KINDS),
        help=f"comma-separated fault kinds (default: all of them): {','.join(KINDS)}",
    )
    parser.add_argument("--faults-per-minute", type=float, default=6.0)
    parser.add_argument("--instances", type=int, default=2, help="instances of payments and of each consumer service")
    parser.add_argument("--stall-seconds", type=float, default=900.0, help="the drain gives up after this long idle")
    parser.add_argument("--out", type=Path, default=Path("chaos-results"), help="where the JSON report goes")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    settings = ChaosSettings(
        seed=seed,
        minutes=args.minutes,
        payments=args.payments,
        accounts=args.accounts,
        faults=tuple(k.strip() for k in args.faults.split(",") if k.strip()),
        faults_per_minute=args.faults_per_minute,
        instances=args.instances,
        stall_seconds=args.stall_seconds,
        out=args.out,
        keep=args.keep,
    )
    report = asyncio.run(run_chaos(settings))
    sys.exit(0 if report.holds else 1)


if __name__ == "__main__":
    main()
