"""The scheduled synthetic-traffic function (staging): thin over :mod:`stratus.synthetic`.

EventBridge Scheduler invokes it every ``synthetic.schedule_minutes``; it reads its
configuration (``STRATUS_SYNTHETIC``) per invocation, runs the scenario against each
agent's ``live`` alias with the agents' bundled suites (the release hooks' loaders),
and fails the invocation when a case failed, after publishing the counts.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.handlers.release_hooks import schema_for, suites_for
from stratus import composition
from stratus.observability import logger
from stratus.synthetic import EmfSyntheticSink, SyntheticConfig, live_target, run_scenario


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = SyntheticConfig.from_env(os.environ)
    target = live_target(composition.current().clients.client("lambda"), config, schema_for)
    outcomes = run_scenario(
        target,
        sorted(config.functions),
        suites_for=suites_for,
        sink=EmfSyntheticSink(),
        scenario=config.scenario,
    )
    logger.info("synthetic scenario passed", extra={"scenario": config.scenario})
    return {"scenario": config.scenario, "agents": {o.agent: o.passed for o in outcomes}}
