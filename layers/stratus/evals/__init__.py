"""Behavioural evals: suites as data, a runner, the release gate and its reports.

``models`` (the suite file format, published as ``evals/schema.json``), ``runner``
(runs cases against a :class:`runner.Target` with bounded concurrency and checks
their assertions), ``gate`` (scores, baselines and the verdict) and ``reports``
(JUnit XML, Markdown, JSON). The package knows nothing about the fake model or
moto: the ``stratus eval`` command (``infra/eval_cli.py``) builds the target.
"""
