"""A stand-in for `paydesk run`: the real `Supervisor` over tiny sleeper children, for test_supervisor.

Usage: `python supervised_sleepers.py NAME... --intake NAME...`. Each child prints `<name> got SIGTERM` when
asked to stop and exits 0; a SIGINT would kill it with a KeyboardInterrupt (exit code 1), which the test
would see in the runner's `stopped` lines.
"""

from __future__ import annotations

import sys

from paydesk.supervisor import Backoff, Supervisor, stop_order

SLEEPER = """
import signal, sys, time
name = sys.argv[1]
def stop(*_):
    print(f"{name} got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.2)
"""


def main(argv: list[str]) -> None:
    split = argv.index("--intake") if "--intake" in argv else len(argv)
    names, intake = argv[:split], argv[split + 1 :]
    supervisor = Supervisor(backoff=Backoff(initial=0.5, cap=2.0), stop_timeout=30.0)
    supervisor.install_signal_handlers()
    for name in names:
        supervisor.add(name, [sys.executable, "-c", SLEEPER, name])
    supervisor.start()
    print("running", flush=True)
    try:
        supervisor.serve(interval=0.1)
    finally:
        supervisor.stop(stop_order(names, intake))
        print("stopped.", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
