"""Benchmarks for Stratus: handler cold starts and per-invoke runtime overhead.

Run ``python -m bench.run`` (or ``--quick``); it writes ``bench/report.md`` and
its JSON twin ``bench/report.json``. Nothing here asserts on wall-clock times:
the numbers are reported, never judged, because they depend on the machine.
"""
