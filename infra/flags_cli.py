"""``stratus flags``: read and change the stage's feature flags (issue 19).

* ``stratus flags list`` / ``get NAME``: the features of the current document.
* ``stratus flags set NAME``: ``--default VALUE``; ``--rule R --when VALUE
  --condition KEY=OP:VALUE`` (repeatable: all must match) adds or replaces rule ``R``;
  ``--rollout PERCENT --value V`` adds a deterministic per-tenant rollout (a
  ``MODULO_RANGE`` rule on ``tenant_hash``, ``BASE`` 100, ``START`` 0, ``END``
  PERCENT-1, with any ``--condition`` too); ``--rules JSON`` replaces every rule;
  ``--remove-rule R``; ``--delete`` removes the feature. Values are JSON; a bare word is
  a string (``--default fast``).
* ``stratus flags set-all --file F``: the whole document.

Every write is checked first against ``stratus/data/flags.schema.json`` (the profile's
validator) and by Powertools' own schema validator; a document that fails either is
refused with the reasons, exit 2, and nothing is written.

Where: ``--stack S`` (or ``--stage S``: the stack ``Stratus-S``) is a deployed stack,
its ids from the stack's ``Flags*`` outputs; a write is a new hosted configuration
version and a deployment with the stack's strategy. Otherwise the running local cloud
(``.stratus/local.json``, or ``--state-file``): a new hosted version, which the local
AppConfigData serves at once (the functions see it within ``STRATUS_FLAGS_MAX_AGE_S``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.paths import REPO_ROOT
from infra.topology.flags import CONTENT_TYPE, document_text, schema

LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
OUTPUTS = {
    "application": "FlagsApplication",
    "environment": "FlagsEnvironment",
    "profile": "FlagsProfile",
    "strategy": "FlagsDeploymentStrategyId",
}
ROLLOUT_KEY = "tenant_hash"
ACTIONS = (
    "EQUALS",
    "NOT_EQUALS",
    "KEY_GREATER_THAN_VALUE",
    "KEY_GREATER_THAN_OR_EQUAL_VALUE",
    "KEY_LESS_THAN_VALUE",
    "KEY_LESS_THAN_OR_EQUAL_VALUE",
    "STARTSWITH",
    "ENDSWITH",
    "IN",
    "NOT_IN",
    "KEY_IN_VALUE",
    "KEY_NOT_IN_VALUE",
    "VALUE_IN_KEY",
    "VALUE_NOT_IN_KEY",
    "ALL_IN_VALUE",
    "ANY_IN_VALUE",
    "NONE_IN_VALUE",
    "MODULO_RANGE",
    "SCHEDULE_BETWEEN_TIME_RANGE",
    "SCHEDULE_BETWEEN_DATETIME_RANGE",
    "SCHEDULE_BETWEEN_DAYS_OF_WEEK",
)


class FlagsError(Exception):
    """Bad input or a document that does not validate (exit 2)."""


# -- the document ------------------------------------------------------------------------


def json_value(text: str) -> Any:
    """A JSON value; a bare word that is not JSON is a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_condition(text: str) -> dict[str, Any]:
    """``KEY=OP:VALUE`` -> a Powertools condition (``agent=EQUALS:triage``)."""
    key, eq, rest = text.partition("=")
    action, colon, value = rest.partition(":")
    if not eq or not colon or not key.strip():
        raise FlagsError(f"--condition {text!r}: expected KEY=OP:VALUE (agent=EQUALS:triage)")
    action = action.strip().upper()
    if action not in ACTIONS:
        raise FlagsError(f"--condition {text!r}: unknown operator {action} ({', '.join(ACTIONS)})")
    return {"action": action, "key": key.strip(), "value": json_value(value)}


def rollout_condition(percent: float) -> dict[str, Any]:
    """The first ``percent`` of 100 buckets of ``tenant_hash``, the same tenants each time."""
    if percent != int(percent) or not 1 <= percent <= 100:
        raise FlagsError(f"--rollout {percent}: a whole percentage within 1..100")
    return {
        "action": "MODULO_RANGE",
        "key": ROLLOUT_KEY,
        "value": {"BASE": 100, "START": 0, "END": int(percent) - 1},
    }


def validate(document: Any) -> None:
    """Refuse a document that the profile's validator or Powertools would refuse."""
    import jsonschema
    from aws_lambda_powertools.utilities.feature_flags.exceptions import SchemaValidationError
    from aws_lambda_powertools.utilities.feature_flags.schema import SchemaValidator

    validator = jsonschema.Draft4Validator(schema())
    problems = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(document)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]
    if not problems:
        try:
            SchemaValidator(document).validate()
        except SchemaValidationError as error:
            problems.append(str(error))
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise FlagsError(f"the flags document does not validate:\n  {shown}{more}")


def changed(document: dict[str, Any], name: str, args: argparse.Namespace) -> dict[str, Any]:
    """``document`` with feature ``name`` changed as ``stratus flags set`` says."""
    result = copy.deepcopy(document)
    if args.delete:
        if name not in result:
            raise FlagsError(f"no feature {name!r} to delete")
        del result[name]
        return result
    feature = result.get(name)
    if feature is None:
        if args.default is None:
            raise FlagsError(f"{name!r} is a new feature: give --default")
        feature = {}
    if args.default is not None:
        feature["default"] = json_value(args.default)
        if not isinstance(feature["default"], bool):
            feature.setdefault("boolean_type", False)
    rules: dict[str, Any] = dict(feature.get("rules") or {})
    if args.rules is not None:
        parsed = json_value(args.rules)
        if not isinstance(parsed, dict):
            raise FlagsError("--rules must be a JSON object of rule name -> rule")
        rules = parsed
    for rule in args.remove_rule or ():
        if rules.pop(rule, None) is None:
            raise FlagsError(f"{name!r} has no rule {rule!r}")
    conditions = [parse_condition(c) for c in args.condition or ()]
    if args.rollout is not None:
        if args.value is None:
            raise FlagsError("--rollout needs --value (what the rolled-out tenants get)")
        conditions.append(rollout_condition(args.rollout))
        rule_name = args.rule or f"rollout {int(args.rollout)}%"
        rules[rule_name] = {"when_match": json_value(args.value), "conditions": conditions}
    elif args.rule is not None:
        if args.when is None or not conditions:
            raise FlagsError("--rule needs --when and at least one --condition")
        rules[args.rule] = {"when_match": json_value(args.when), "conditions": conditions}
    elif conditions or args.when is not None or args.value is not None:
        raise FlagsError("--condition/--when go with --rule, --value with --rollout")
    if rules:
        feature["rules"] = rules
    else:
        feature.pop("rules", None)
    result[name] = feature
    return result


# -- where the document lives ------------------------------------------------------------


@dataclass
class FlagsStore:
    """The stage's configuration profile: read the current document, write a new one."""

    appconfig: Any
    appconfigdata: Any
    application: str
    environment: str
    profile: str
    #: The deployment strategy on AWS; None locally (moto has no deployments).
    strategy: str | None
    #: The newest version :meth:`read` saw on AWS: a write names it, so AppConfig refuses
    #: it if someone else wrote a version in between (no lost update).
    seen_version: int | None = None

    def read(self) -> dict[str, Any]:
        if self.strategy is None:  # local: what AppConfigData serves is the latest version
            token = self.appconfigdata.start_configuration_session(
                ApplicationIdentifier=self.application,
                EnvironmentIdentifier=self.environment,
                ConfigurationProfileIdentifier=self.profile,
            )["InitialConfigurationToken"]
            raw = self.appconfigdata.get_latest_configuration(ConfigurationToken=token)
            return _document(raw["Configuration"].read())
        pages = self.appconfig.get_paginator("list_hosted_configuration_versions").paginate(
            ApplicationId=self.application, ConfigurationProfileId=self.profile
        )
        versions = [item["VersionNumber"] for page in pages for item in page["Items"]]
        if not versions:
            return {}
        self.seen_version = max(versions)
        version = self.appconfig.get_hosted_configuration_version(
            ApplicationId=self.application,
            ConfigurationProfileId=self.profile,
            VersionNumber=max(versions),
        )
        return _document(version["Content"].read())

    def write(self, document: dict[str, Any], description: str) -> str:
        """A new hosted version (and its deployment on AWS); what happened, in words."""
        latest = {} if self.seen_version is None else {"LatestVersionNumber": self.seen_version}
        version = self.appconfig.create_hosted_configuration_version(
            ApplicationId=self.application,
            ConfigurationProfileId=self.profile,
            Content=document_text(document).encode(),
            ContentType=CONTENT_TYPE,
            Description=description[:1024],
            **latest,
        )["VersionNumber"]
        if self.strategy is None:
            return (
                f"version {version} written; the local functions see it within their "
                "cache time (STRATUS_FLAGS_MAX_AGE_S)"
            )
        deployment = self.appconfig.start_deployment(
            ApplicationId=self.application,
            EnvironmentId=self.environment,
            DeploymentStrategyId=self.strategy,
            ConfigurationProfileId=self.profile,
            ConfigurationVersion=str(version),
            Description=description[:1024],
        )
        return (
            f"version {version} written; deployment {deployment['DeploymentNumber']} "
            f"started with strategy {self.strategy} (state {deployment.get('State', '?')})"
        )


def _document(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise FlagsError("the stored flags document is not a JSON object")
    return data


def _outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    except (ClientError, BotoCoreError) as error:
        raise FlagsError(f"--stack {stack}: {error}") from None
    values = {o["OutputKey"]: str(o["OutputValue"]) for o in found}
    missing = [name for name in OUTPUTS.values() if name not in values]
    if missing:
        raise FlagsError(f"stack {stack} has no {', '.join(missing)} output (deploy issue 19)")
    return {field: values[name] for field, name in OUTPUTS.items()}


def _stage_stack(args: argparse.Namespace) -> str:
    """``Stratus-<stage>``, or ``Stratus-<stage>-<region>`` for a stage of several regions
    (each region's stack has its own flags: a change applies to one region at a time)."""
    from infra.config import StageConfigError, load_stage

    try:
        regions = getattr(load_stage(args.stage), "regions", ())
    except StageConfigError as error:
        raise FlagsError(str(error)) from None
    if not regions:
        return f"Stratus-{args.stage}"
    if args.region not in regions:
        raise FlagsError(f"stage {args.stage} has regions {', '.join(regions)}: give --region")
    return f"Stratus-{args.stage}-{args.region}"


def open_store(args: argparse.Namespace, session: Any = None) -> FlagsStore:
    """The deployed stack's profile, or the running local cloud's."""
    import boto3

    stack = None if args.local else args.stack or (_stage_stack(args) if args.stage else None)
    if stack:
        session = session or boto3.session.Session(region_name=args.region)
        ids = _outputs(session.client("cloudformation"), stack)
        return FlagsStore(
            appconfig=session.client("appconfig"),
            appconfigdata=session.client("appconfigdata"),
            application=ids["application"],
            environment=ids["environment"],
            profile=ids["profile"],
            strategy=ids["strategy"],
        )
    try:
        facts = json.loads(Path(args.state_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FlagsError(
            f"no local cloud ({args.state_file}): start `stratus dev`, or give --stack"
        ) from None
    flags = facts.get("flags") or {}
    if not flags.get("application_id"):
        raise FlagsError(f"{args.state_file} has no flags (a local cloud from before issue 19)")
    session = session or boto3.session.Session(
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto's, not a secret
        region_name=str(facts.get("region", "us-east-1")),
    )
    endpoint = str(facts["aws_endpoint_url"])
    return FlagsStore(
        appconfig=session.client("appconfig", endpoint_url=endpoint),
        appconfigdata=session.client("appconfigdata", endpoint_url=endpoint),
        application=flags["application_id"],
        environment=flags["environment"],
        profile=flags["profile_id"],
        strategy=None,
    )


# -- the commands -------------------------------------------------------------------------


def _summary(feature: Any) -> str:
    if not isinstance(feature, dict):
        return json.dumps(feature)
    rules = feature.get("rules") or {}
    default = json.dumps(feature.get("default"))
    return f"default {default}, {len(rules)} rule(s)" + (f": {', '.join(rules)}" if rules else "")


def run(args: argparse.Namespace, out: Any = sys.stdout, session: Any = None) -> int:
    store = open_store(args, session)
    if args.flags_command == "list":
        document = store.read()
        if args.json:
            print(json.dumps(document, indent=2, sort_keys=True), file=out)
        for name in sorted(document) if not args.json else ():
            print(f"{name}: {_summary(document[name])}", file=out)
        return 0
    if args.flags_command == "get":
        document = store.read()
        if args.name not in document:
            raise FlagsError(f"no feature {args.name!r} (stratus flags list shows them)")
        print(json.dumps(document[args.name], indent=2, sort_keys=True), file=out)
        return 0
    if args.flags_command == "set-all":
        try:
            document = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise FlagsError(f"--file {args.file}: {error}") from None
        validate(document)
        print(store.write(document, f"stratus flags set-all {Path(args.file).name}"), file=out)
        return 0
    document = changed(store.read(), args.name, args)
    validate(document)
    print(store.write(document, f"stratus flags set {args.name}"), file=out)
    return 0


def main(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return run(args)
    except FlagsError as error:
        print(f"stratus flags: {error}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as error:
        print(f"stratus flags: {error}", file=sys.stderr)
        return 1


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", help="a deployed stack (default: the running local cloud)")
    parser.add_argument("--stage", help="a deployed stage (its stack Stratus-<stage>)")
    parser.add_argument("--region", help="AWS region of --stack / --stage")
    parser.add_argument(
        "--local",
        action="store_true",
        help="the running local cloud (the default without --stack/--stage)",
    )
    parser.add_argument(
        "--state-file", type=Path, default=LOCAL_FACTS, help="the local cloud's facts"
    )
    parser.set_defaults(func=main)


def add_parser(commands: Any) -> None:
    """Register ``flags`` on the ``stratus`` command's sub-parsers."""
    flags = commands.add_parser("flags", help="feature flags on AppConfig (local or a stack)")
    sub = flags.add_subparsers(dest="flags_command", required=True)
    listing = sub.add_parser("list", help="every feature: default and rules")
    listing.add_argument("--json", action="store_true", help="the whole document as JSON")
    _where(listing)
    get = sub.add_parser("get", help="one feature as JSON")
    get.add_argument("name")
    _where(get)
    put = sub.add_parser("set", help="change one feature (validated, then a new version)")
    put.add_argument("name")
    put.add_argument("--default", help="the value without a matching rule (JSON)")
    put.add_argument("--rule", help="the rule to add or replace (with --when, --condition)")
    put.add_argument("--when", help="the rule's value when its conditions match (JSON)")
    put.add_argument(
        "--condition",
        action="append",
        metavar="KEY=OP:VALUE",
        help="a condition of --rule / --rollout (repeat: all must match)",
    )
    put.add_argument("--rules", help="replace every rule with this JSON object")
    put.add_argument("--remove-rule", action="append", metavar="RULE", help="drop a rule")
    put.add_argument("--rollout", type=float, metavar="PERCENT", help="per-tenant rollout")
    put.add_argument("--value", help="what the rolled-out tenants get (JSON)")
    put.add_argument("--delete", action="store_true", help="remove the feature")
    _where(put)
    whole = sub.add_parser("set-all", help="replace the whole document from a JSON file")
    whole.add_argument("--file", required=True)
    _where(whole)
