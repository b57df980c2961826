"""``stratus review``: grade sampled answers over the HTTP API (so key scopes apply).

* ``stratus review list [--agent A] [--status pending|reviewed|all] [--limit N]``
* ``stratus review show ID``
* ``stratus review grade ID --score 0.8 [--comment TEXT]``
* ``stratus review [--agent A]``: walk the pending reviews one by one, asking for a
  score (or ``s`` to skip, ``q`` to quit) and a comment.

It talks to the running local cloud by default (URL and the demo tenant's key from
``.stratus/local.json``); ``--api URL --key KEY`` reaches a stage. The key needs
the ``admin`` scope. Exit codes: 0 done, 1 the API refused (its error is printed),
2 no API answers or bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from infra.paths import REPO_ROOT

LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
TIMEOUT_S = 30.0
PREVIEW_CHARS = 60


class Unreachable(Exception):
    """No API answers (exit 2)."""


class ApiRefused(Exception):
    """The API answered with an error (exit 1)."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.code = str(error.get("code") or status)
        super().__init__(f"{status} {self.code}: {error.get('message') or body}")


class ReviewApi:
    """The review routes of one API, with one tenant key."""

    def __init__(self, url: str, key: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise Unreachable(f"--api must be an http(s) URL, not {url!r}")
        self.url, self.key = url.rstrip("/"), key

    def call(self, method: str, path: str, body: Any = None, query: Any = None) -> Any:
        query = {k: v for k, v in (query or {}).items() if v is not None}
        target = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            target,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:  # noqa: S310
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ApiRefused(error.code, parsed) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"no API answers at {self.url} ({reason})") from None

    def listing(self, agent: str | None, status: str, limit: int | None = None) -> Any:
        query = {"agent": agent, "status": status, "limit": limit}
        return self.call("GET", "/v1/reviews", query=query)

    def pending(self, agent: str | None) -> list[dict[str, Any]]:
        """Every pending review (all pages), newest first."""
        reviews: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"agent": agent, "status": "pending", "limit": 100, "cursor": cursor}
            page = self.call("GET", "/v1/reviews", query=query)
            reviews.extend(page["reviews"])
            cursor = page.get("next_cursor")
            if not cursor:
                return reviews

    def show(self, review_id: str) -> Any:
        return self.call("GET", f"/v1/reviews/{urllib.parse.quote(review_id, safe='')}")

    def grade(self, review_id: str, score: float, comment: str) -> Any:
        path = f"/v1/reviews/{urllib.parse.quote(review_id, safe='')}"
        return self.call("POST", path, {"score": score, "comment": comment})


def _connect(args: argparse.Namespace) -> ReviewApi:
    url, key = args.api, args.key
    if not url or not key:
        facts_file: Path = args.facts
        try:
            from infra.local.facts import load_facts

            facts = load_facts(facts_file)
        except (OSError, ValueError):
            raise Unreachable(
                f"no local cloud is running ({facts_file} not found or unreadable); start one "
                "with `stratus dev`, or pass --api URL --key KEY"
            ) from None
        url, key = url or facts.get("api_url"), key or facts.get("demo_tenant_key")
        if not url or not key:
            raise Unreachable(f"{facts_file} names no api_url / demo_tenant_key")
    return ReviewApi(str(url), str(key))


def _preview(text: Any) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def _score(entry: dict[str, Any]) -> str:
    value = entry.get("score")
    return "-" if value is None else f"{value:.3f}"


def print_scores(scores: list[dict[str, Any]], out: TextIO) -> None:
    for s in scores:
        print(
            f"HumanScore {s['agent']} {s['release']}: {_score(s)} ({s['reviewed']} reviewed)",
            file=out,
        )


def print_review(review: dict[str, Any], out: TextIO) -> None:
    print(f"review   {review['review_id']}  ({review['status']})", file=out)
    print(
        f"agent    {review['agent']} release {review['release']} model {review.get('model')}",
        file=out,
    )
    print(f"source   {review['kind']} {review['source_id']}  at {review['created_at']}", file=out)
    cut = " [truncated]"
    print(f"input{cut if review.get('input_truncated') else ''}:\n  {review['input']}", file=out)
    print(f"output{cut if review.get('output_truncated') else ''}:\n  {review['output']}", file=out)
    if review["status"] == "reviewed":
        print(f"grade    {_score(review)}  {review.get('comment') or ''}".rstrip(), file=out)


def _list(api: ReviewApi, args: argparse.Namespace, out: TextIO) -> int:
    page = api.listing(args.agent, args.status, args.limit)
    if args.json:
        print(json.dumps(page, indent=2), file=out)
        return 0
    for r in page["reviews"]:
        print(
            f"{r['review_id']}  {r['agent']:<13} {r['release']:<8} {r['status']:<9} "
            f"{_score(r):>5}  {_preview(r['input'])}",
            file=out,
        )
    if not page["reviews"]:
        print(f"no {args.status} reviews", file=out)
    if page.get("next_cursor"):
        print("(more: raise --limit)", file=out)
    print_scores(page["human_score"], out)
    return 0


def _show(api: ReviewApi, args: argparse.Namespace, out: TextIO) -> int:
    review = api.show(args.review_id)
    if args.json:
        print(json.dumps(review, indent=2), file=out)
    else:
        print_review(review, out)
    return 0


def _grade(api: ReviewApi, args: argparse.Namespace, out: TextIO) -> int:
    if not 0 <= args.score <= 1:
        raise ApiRefused(422, {"error": {"code": "usage", "message": "--score must be 0..1"}})
    graded = api.grade(args.review_id, args.score, args.comment or "")
    if args.json:
        print(json.dumps(graded, indent=2), file=out)
    else:
        print(f"graded {graded['review_id']}: {_score(graded)}", file=out)
        print_scores([graded["human_score"]], out)
    return 0


def walk(
    api: ReviewApi,
    agent: str | None,
    *,
    ask: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
) -> int:
    """Grade the pending reviews one by one: a score 0..1, ``s`` skips, ``q`` quits."""
    pending = api.pending(agent)
    if not pending:
        print("no pending reviews", file=out)
        return 0
    graded = skipped = 0
    for n, review in enumerate(pending, 1):
        print(f"\n[{n}/{len(pending)}]", file=out)
        print_review(review, out)
        while True:
            try:
                answer = ask("score 0..1 (s skip, q quit): ").strip().lower()
            except EOFError:
                answer = "q"
            if answer in ("q", "s"):
                break
            try:
                score = float(answer)
            except ValueError:
                score = -1.0
            if 0 <= score <= 1:
                break
            print("  a number from 0 to 1, s or q", file=out)
        if answer == "q":
            break
        if answer == "s":
            skipped += 1
            continue
        try:
            comment = ask("comment (optional): ").strip()
        except EOFError:
            comment = ""
        try:
            result = api.grade(review["review_id"], score, comment)
        except ApiRefused as refused:
            if refused.code != "already_reviewed":
                raise
            print("  graded by someone else meanwhile; skipped", file=out)
            skipped += 1
            continue
        graded += 1
        print_scores([result["human_score"]], out)
    print(f"\n{graded} graded, {skipped} skipped", file=out)
    return 0


def _walk(api: ReviewApi, args: argparse.Namespace, out: TextIO) -> int:
    return walk(api, args.agent, out=out)


def _connection_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--api", default=default, metavar="URL", help="the API (default: the local cloud's)"
    )
    parser.add_argument(
        "--key", default=default, help="a tenant key with the admin scope (default: the demo's)"
    )
    parser.add_argument(
        "--facts",
        type=Path,
        default=argparse.SUPPRESS if default is argparse.SUPPRESS else LOCAL_FACTS,
        help=argparse.SUPPRESS,
    )


def add_parser(commands: Any) -> None:
    """Register ``review`` on the ``stratus`` command's sub-parsers."""
    review = commands.add_parser(
        "review",
        help="grade sampled answers (human review); alone, walks the pending ones",
    )
    _connection_options(review, None)
    review.add_argument("--agent", help="only this agent's reviews")
    review.set_defaults(func=main, action=_walk)
    sub = review.add_subparsers(dest="review_command")

    listing = sub.add_parser("list", help="list reviews and the human scores")
    listing.add_argument("--agent", default=argparse.SUPPRESS, help="only this agent's reviews")
    listing.add_argument("--status", choices=("pending", "reviewed", "all"), default="pending")
    listing.add_argument("--limit", type=int, help="at most this many (1..100; default 20)")
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    _connection_options(listing, argparse.SUPPRESS)
    listing.set_defaults(action=_list)

    show = sub.add_parser("show", help="show one review")
    show.add_argument("review_id")
    show.add_argument("--json", action="store_true", help="print the API's JSON")
    _connection_options(show, argparse.SUPPRESS)
    show.set_defaults(action=_show)

    grade = sub.add_parser("grade", help="grade one review (once)")
    grade.add_argument("review_id")
    grade.add_argument("--score", type=float, required=True, help="0 (bad) .. 1 (good)")
    grade.add_argument("--comment", default="", help="why (at most 2000 characters)")
    grade.add_argument("--json", action="store_true", help="print the API's JSON")
    _connection_options(grade, argparse.SUPPRESS)
    grade.set_defaults(action=_grade)


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        return int(args.action(_connect(args), args, out))
    except Unreachable as error:
        print(f"stratus review: {error}", file=sys.stderr)
        return 2
    except ApiRefused as error:
        print(f"stratus review: {error}", file=sys.stderr)
        return 1
