"""Ports of the model gateway's state, with their DynamoDB, AWS and in-memory adapters.

* :mod:`.ports`: the protocols the domain modules (budgets, breaker, key buckets,
  call ledger, usage rollups, model keys, budget alerts) depend on;
* :mod:`.dynamo`: their DynamoDB adapters on :class:`stratus.ddb.Table`;
* :mod:`.services`: the SNS alert publisher and the Secrets Manager key source;
* :mod:`.memory`: in-memory fakes of every port (plain dicts under a lock).

Which adapter implements which port is decided by :mod:`stratus.composition`.
"""
