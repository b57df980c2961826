"""Asynchronous jobs: contracts, the job store, the lifecycle service, notifications.

* :mod:`~stratus.jobs.contracts`: statuses, request/view models, the producer
  contract and its parser (pure);
* :mod:`~stratus.jobs.store`: the ``JobStore`` port (every transition conditional);
  :mod:`~stratus.jobs.dynamo` / :mod:`~stratus.jobs.memory`: on DynamoDB and in
  memory (same contract tests), with in-memory fakes of the other ports;
* :mod:`~stratus.jobs.ports`: queue, workflow engine, events, callbacks, secrets;
  :mod:`~stratus.jobs.aws_adapters`: their SQS, Step Functions, SNS and Secrets
  Manager adapters;
* :mod:`~stratus.jobs.service`: ``JobService`` (submit, claim under lease, run,
  route, cancel, approve, finish and notify, the retry decision);
* :mod:`~stratus.jobs.ingest`: producer messages become jobs, poison goes to the DLQ;
* :mod:`~stratus.jobs.workflow`: the task actions of a supervised workflow;
* :mod:`~stratus.jobs.notifications`: ``Notifier`` (the jobs topic), the
  destination check, ``sign`` and ``verify``;
* :mod:`~stratus.jobs.callbacks`: callbacks delivered asynchronously (queue,
  pinned address, ports 80/443, no redirects, status on the job);
* :mod:`~stratus.jobs.retries`: the retry decision and its backoff;
  :mod:`~stratus.jobs.sweep`: the lease sweep.

The composition root (:class:`stratus.composition.Runtime`, ``jobs`` section)
wires them; nothing here knows Lambda or HTTP.
"""

from stratus.errors import JobBudgetExceeded
from stratus.jobs.contracts import (
    ACTIVE,
    AGENT_NAME,
    JOB_SK,
    PRODUCER_VERSIONS,
    STEP_PREFIX,
    TERMINAL,
    ApprovalRequest,
    JobMessage,
    JobRequest,
    JobStatus,
    JobSubmitted,
    JobView,
    PoisonMessage,
    ProducerMessage,
    StepView,
    check_budget,
    job_id_for,
    job_input,
    now_iso,
    parse_producer_message,
    producer_contract_schema,
    request_hash,
    usage_of,
    view,
)
from stratus.jobs.dynamo import DynamoJobStore
from stratus.jobs.memory import MemoryJobStore
from stratus.jobs.notifications import (
    SIGNATURE_HEADER,
    Notifier,
    callback_allowed,
    public_destination,
    sign,
    verify,
)
from stratus.jobs.retries import Delivery, failure_action, retry_delay_s
from stratus.jobs.service import BadJobMessage, JobBusy, JobService
from stratus.jobs.store import JobStore

__all__ = [
    "ACTIVE",
    "AGENT_NAME",
    "JOB_SK",
    "PRODUCER_VERSIONS",
    "SIGNATURE_HEADER",
    "STEP_PREFIX",
    "TERMINAL",
    "ApprovalRequest",
    "BadJobMessage",
    "Delivery",
    "DynamoJobStore",
    "JobBudgetExceeded",
    "JobBusy",
    "JobMessage",
    "JobRequest",
    "JobService",
    "JobStatus",
    "JobStore",
    "JobSubmitted",
    "JobView",
    "MemoryJobStore",
    "Notifier",
    "PoisonMessage",
    "ProducerMessage",
    "StepView",
    "callback_allowed",
    "check_budget",
    "failure_action",
    "job_id_for",
    "job_input",
    "now_iso",
    "parse_producer_message",
    "producer_contract_schema",
    "public_destination",
    "request_hash",
    "retry_delay_s",
    "sign",
    "usage_of",
    "verify",
    "view",
]
