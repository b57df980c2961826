"""Cost of model calls from a versioned price table (a data file).

Money is computed in ``Decimal`` and rounded once, at the edge, so that sums of
many small calls do not drift. Cached input tokens are billed at the cached
rate instead of the input rate; reasoning tokens are already part of the
output tokens and are not billed again.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stratus.errors import ConfigurationError
from stratus.usage import Usage

BUNDLED_PRICE_TABLE = Path(__file__).with_name("data") / "prices.json"
MILLION = Decimal(1_000_000)
USD_QUANTUM = Decimal("0.00000001")


class ModelPrice(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(frozen=True)

    input: Decimal = Field(ge=0)
    cached_input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)


class PriceTable(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    currency: str = "USD"
    models: dict[str, ModelPrice]

    def price_for(self, model: str) -> ModelPrice:
        """The price of ``model``; dated snapshots match their base name.

        ``gpt-5-mini-2025-08-07`` is priced as ``gpt-5-mini``: the longest
        table entry that prefixes the id wins. An unknown model is an error,
        never free.
        """
        if model in self.models:
            return self.models[model]
        candidates = [name for name in self.models if model.startswith(name + "-")]
        if not candidates:
            raise ConfigurationError(
                f"model {model!r} has no price in price table {self.version}",
                details={"model": model},
            )
        return self.models[max(candidates, key=len)]

    def cost(self, model: str, usage: Usage) -> Decimal:
        price = self.price_for(model)
        uncached = usage.input_tokens - usage.cached_input_tokens
        total = (
            uncached * price.input
            + usage.cached_input_tokens * price.cached_input
            + usage.output_tokens * price.output
        ) / MILLION
        return total.quantize(USD_QUANTUM)


@lru_cache(maxsize=4)
def load_price_table(path: Path | None = None) -> PriceTable:
    source = path or BUNDLED_PRICE_TABLE
    try:
        return PriceTable.model_validate(json.loads(source.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load price table {source}: {exc}") from exc
