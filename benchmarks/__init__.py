"""Benchmark scripts: ``python -m benchmarks.<name> [--quick] [--device cpu|cuda] [--out DIR]``.

Each writes raw JSON, a Markdown table and PNG plots to ``benchmarks/results/``
(or ``--out``), recording the command, the git commit, the device and the wall time.
"""
