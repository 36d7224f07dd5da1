"""Custom search attributes on every workflow of a dispatch, so that an operator can list one
dispatch's workflows in the Temporal UI (`DispatchId = 42`) or one client's deliveries
(`ClientId = 7`). A namespace must know them before a workflow carrying them can start: the
embedded dev server registers them as it starts (`make run`), and the worker and the API
register whatever a namespace lacks when they start."""

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger(__name__)

DISPATCH_ID = SearchAttributeKey.for_int("DispatchId")
CLIENT_ID = SearchAttributeKey.for_int("ClientId")
KEYS = (DISPATCH_ID, CLIENT_ID)


def dev_server_flags() -> list[str]:
    """`temporal server start-dev` flags that register the attributes as the server starts
    (a namespace learns attributes added later only after its cache refreshes, some seconds)."""
    return [flag for key in KEYS for flag in ("--search-attribute", f"{key.name}=Int")]


def of_dispatch(dispatch_id: int, client_id: int | None = None) -> TypedSearchAttributes:
    pairs = [SearchAttributePair(DISPATCH_ID, dispatch_id)]
    if client_id is not None:
        pairs.append(SearchAttributePair(CLIENT_ID, client_id))
    return TypedSearchAttributes(pairs)


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Registers the attributes the namespace lacks; returns their names. Needs the operator
    API: on a server where this worker may not use it, register them once by hand (README)."""
    try:
        known = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        existing = set(known.custom_attributes) | set(known.system_attributes)
    except RPCError as error:
        # The time-skipping test server adds attributes but cannot list them.
        if error.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = set()
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_INT
        for key in KEYS
        if key.name not in existing
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
        log.info("search attributes registered: %s", sorted(missing))
    return sorted(missing)
