"""What a Lambda function costs per million requests and per million predictions, from a dated price table.

The prices are AWS's list prices for us-east-1 (https://aws.amazon.com/lambda/pricing/), as last known:
they cannot be fetched at run time, so they are a table with its date. Only the first tier of the
duration price is used: the cheaper tiers start at billions of GB-seconds a month, and the free tier
(a million requests and 400,000 GB-seconds a month) is left out, so the figures are what an account
already past the free tier pays for these requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

#: Lambda bills duration in 1 ms steps (since December 2020), each invocation rounded up.
BILLING_STEP_MS = 1
#: Lambda's memory range (MB), for every architecture.
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10_240
#: GB-seconds use binary gigabytes: 1,024 MB of configured memory for one second is one GB-second.
MB_PER_GB = 1024


@dataclass(frozen=True)
class PriceTable:
    """Lambda's list prices for one region, and where and when they were read."""

    region: str
    #: When these prices were last confirmed against the pricing page (ISO date).
    as_of: str
    source: str
    #: USD per GB-second, first tier, by architecture.
    gb_second: dict[str, float]
    #: USD per request.
    request: float
    #: Duration billing step in ms.
    billing_step_ms: int
    #: Ephemeral storage (/tmp) included at no charge, MB; more costs ``ephemeral_gb_second`` per GB-second.
    ephemeral_storage_free_mb: int
    ephemeral_gb_second: float
    #: Whether a cold start's INIT duration is billed (on-demand functions).
    init_billed: bool
    init_billing_note: str

    def to_json(self) -> dict:
        """The table as JSON, for the tune report."""
        return asdict(self)


US_EAST_1 = PriceTable(
    region="us-east-1",
    as_of="2025-08-01",
    source="https://aws.amazon.com/lambda/pricing/",
    # Unchanged since Lambda moved to 1 ms billing (x86_64, December 2020) and since Graviton2
    # functions launched (arm64, September 2021); cheaper tiers start at 6 and 7.5 billion GB-s a month.
    gb_second={"x86_64": 0.0000166667, "arm64": 0.0000133334},
    request=0.20 / 1_000_000,
    billing_step_ms=BILLING_STEP_MS,
    ephemeral_storage_free_mb=512,
    ephemeral_gb_second=0.0000000309,
    # https://aws.amazon.com/blogs/compute/aws-lambda-standardizes-billing-for-init-phase/
    init_billed=True,
    init_billing_note=(
        "Since 2025-08-01 Lambda bills the INIT phase of on-demand invocations at the duration price for "
        "every configuration; before, a zip on a managed runtime had its INIT unbilled while container "
        "images and custom runtimes paid for it. A cold request is billed its INIT plus its first invoke."
    ),
)


def billed_ms(duration_ms: float, step_ms: int = BILLING_STEP_MS) -> int:
    """Duration as Lambda bills it: rounded up to the next step (1 ms), at least one step."""
    if duration_ms < 0 or math.isnan(duration_ms):
        raise ValueError(f"a duration must be a non-negative number of ms, got {duration_ms!r}")
    steps = math.ceil(duration_ms / step_ms - 1e-9)  # 3.0000000001 ms of float noise is still 3 ms
    return max(1, steps) * step_ms


def invocation_cost(memory_mb: int, duration_ms: float, arch: str, prices: PriceTable = US_EAST_1) -> float:
    """USD of one invocation: the request price plus its billed duration at the size's GB-second price."""
    check_memory(memory_mb)
    gb_seconds = memory_mb / MB_PER_GB * billed_ms(duration_ms, prices.billing_step_ms) / 1000
    return prices.request + gb_seconds * price_per_gb_second(arch, prices)


def price_per_gb_second(arch: str, prices: PriceTable = US_EAST_1) -> float:
    try:
        return prices.gb_second[arch]
    except KeyError:
        raise ValueError(f"no price for architecture {arch!r}; Lambda runs {', '.join(prices.gb_second)}") from None


def check_memory(memory_mb: int) -> None:
    if not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise ValueError(f"memory size {memory_mb} MB is outside Lambda's {MIN_MEMORY_MB}-{MAX_MEMORY_MB} MB")


@dataclass(frozen=True)
class Cost:
    """USD per million requests and per million predictions at one size and batch size."""

    per_million_requests: float
    per_million_requests_with_cold_starts: float
    per_million_predictions: float
    per_million_predictions_with_cold_starts: float


def cost_of(
    memory_mb: int,
    arch: str,
    warm_ms: Iterable[float],
    cold_ms: Iterable[float],
    rows: int,
    cold_start_rate: float,
    prices: PriceTable = US_EAST_1,
) -> Cost:
    """The cost of a million requests of ``rows`` rows, from measured durations.

    ``warm_ms`` are warm invocation durations: each is billed rounded up, so the mean of the billed
    costs, not the cost of the mean duration, is what a million of them cost. ``cold_ms`` are cold
    starts (process start to first answer, INIT and first invoke together); a share
    ``cold_start_rate`` of requests is billed one of them instead of a warm duration (when
    ``prices.init_billed``; otherwise only its warm part).
    """
    if not 0 <= cold_start_rate <= 1:
        raise ValueError(f"the cold-start rate must be from 0 to 1, got {cold_start_rate!r}")
    if rows < 1:
        raise ValueError(f"a request carries at least one row, got {rows!r}")
    warm = _mean_cost(memory_mb, arch, warm_ms, prices)
    cold = _mean_cost(memory_mb, arch, cold_ms, prices) if prices.init_billed else warm
    mixed = (1 - cold_start_rate) * warm + cold_start_rate * cold
    million = 1_000_000
    return Cost(
        per_million_requests=warm * million,
        per_million_requests_with_cold_starts=mixed * million,
        per_million_predictions=warm * million / rows,
        per_million_predictions_with_cold_starts=mixed * million / rows,
    )


def _mean_cost(memory_mb: int, arch: str, durations_ms: Iterable[float], prices: PriceTable) -> float:
    costs = [invocation_cost(memory_mb, d, arch, prices) for d in durations_ms]
    if not costs:
        raise ValueError("no measured durations to price")
    return math.fsum(costs) / len(costs)
