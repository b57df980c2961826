"""Long-term semantic memory on S3 Vectors (issue 18).

* :mod:`~stratus.memory.policy`: ``MemoryPolicy``, what an agent remembers and recalls
  (``AgentSpec.memory``);
* :mod:`~stratus.memory.store`: the ``VectorStore`` port, the vector and match records,
  the owner (tenant + end customer) and the filters built from it, the filter semantics;
* :mod:`~stratus.memory.s3vectors` / :mod:`~stratus.memory.fake`: the store on Amazon S3
  Vectors (boto3 ``s3vectors``) and in memory (same contract tests);
* :mod:`~stratus.memory.service`: ``MemoryService`` (remember, recall into a prompt
  within a token budget, search, forget a customer, delete one memory, session
  summaries, facts at the end of a turn);
* :mod:`~stratus.memory.tools`: the ``remember`` and ``recall`` tools.

Tenant isolation: every vector's key is ``"{tenant_id}#{memory_id}"`` and its metadata
carries ``tenant_id`` and ``customer_id``; every query filters on both (and on
``expires_at``). The filter is built from the authenticated caller (:class:`Owner`),
never from model or request text. Embeddings go through the gateway
(:mod:`stratus.gateway_embeddings`). Nothing here is imported at package import: the
policy module is imported by :mod:`stratus.agents`.
"""
