"""Delivery receipts posted by the gateways: `POST /receipts`, with a token that may hold
`receipts:write` alone (a gateway's callback holds no other power)."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import Discriminator, Tag

from api.auth import guarded
from api.schemas.receipts import RECEIPTS_MAX, Receipt, Receipts, ReceiptsAnswer
from api.services.receipt_batches import ReceiptBatches
from core.auth import Permission

router = APIRouter(prefix="/receipts", tags=["receipts"])


def _shape(body: Any) -> str:
    return "receipts" if isinstance(body, list) else "receipt"


# One receipt or a list, told apart by their shape: a problem is named `receipt.<field>` or
# `receipts.<index>.<field>`, and refuses the whole request (nothing of it is applied).
ReceiptsBody = Annotated[
    Annotated[Receipt, Tag("receipt")] | Annotated[Receipts, Tag("receipts")],
    Discriminator(_shape),
]


async def receipt_batches(request: Request) -> ReceiptBatches:
    batches: ReceiptBatches = request.app.state.receipt_batches
    return batches


@router.post("", response_model=ReceiptsAnswer, **guarded(Permission.RECEIPTS_WRITE))
async def post_receipts(
    batches: Annotated[ReceiptBatches, Depends(receipt_batches)],
    body: Annotated[
        ReceiptsBody, Body(description=f"One receipt, or a list of up to {RECEIPTS_MAX}.")
    ],
) -> ReceiptsAnswer:
    """A gateway's delivery receipts, one per part of a text: `delivered`, or `undelivered`,
    `expired`, `rejected` with the gateway's `error`. A message is `delivered` once every part
    is, `undelivered` as soon as one part is not (expired and rejected are undelivered, with
    their reason); each part's first receipt is kept and never undone. A receipt that comes
    before our send is recorded waits and is applied when it is. The answer says what became
    of each: applied, waiting, duplicate, out_of_date (its part already said otherwise, or the
    message did not go out), unknown (no such message, or its client was erased).

    Receipts posted at once by many connections are applied together, in the order they came,
    a request's receipts always in one transaction."""
    return await batches.apply(body if isinstance(body, list) else [body])
