"""FROZEN: contracts that only the first shape's workflows use (`workflows/legacy.py`, type names
`DispatchWorkflow` and `DeliveryWorkflow`), kept for the runs started before the upgrade. Recorded
histories depend on their fields: never change them; remove them with those workflows."""

from dataclasses import dataclass

from core.contracts.dispatch import Recipient


@dataclass
class AudiencePageInput:
    """Selects the next page of matching clients and creates their messages (idempotent)."""

    dispatch_id: int
    after_client_id: int
    limit: int


@dataclass
class AudiencePage:
    recipients: list[Recipient]
    # Highest client id of the page; the next page starts above it.
    last_client_id: int
    done: bool
