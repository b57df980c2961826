"""Guardrails: input screening, tool-result framing, output filtering (issue 15).

``policy`` (what an agent's guardrails do), ``rules`` (deterministic screening,
rules as data in ``stratus/data/guardrail_rules.json``), ``pii`` (redaction),
``screen`` (the :class:`~stratus.guardrails.screen.Guardrails` service the runner
calls), ``classifier`` (the optional fast-tier call), ``stream`` (redaction of
streamed text), ``events`` (metrics and audit events). Nothing here imports
``stratus.agents`` or ``stratus.runner`` at module level.
"""
