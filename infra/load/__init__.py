"""``stratus load``: Locust load tests against the local cloud or a deployed stage.

``locustfile`` holds the scenarios (what a client does), ``runner`` starts Locust
headless in a child process with hard bounds (users, duration, request count), and
``report`` turns Locust's CSV files into the Markdown summary. The command itself is
:mod:`infra.load_cli`. Locust (and gevent, which it monkeypatches into the process it
runs in) is imported only inside that child process: the CLI and the tests never
import it.
"""
