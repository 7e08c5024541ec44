"""The fault-injection harness (issue 15, item 1): the whole system as real processes under seeded faults.

`python -m tests.chaos --minutes 10 --seed 7` runs it on demand; `test_chaos.py` is a short seeded run in `make
test`. Modules: `system` (processes), `proxy` (a TCP proxy that drops or delays), `workload` (seeded inputs),
`faults` (seeded fault schedule), `invariants` (what must hold after the drain), `report`, `run` (all together).
"""
