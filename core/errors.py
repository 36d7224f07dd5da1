"""Domain errors; the API turns them into HTTP answers, service code never does."""


class DomainError(Exception):
    """Base of the errors service functions raise."""


class NotFound(DomainError):
    def __init__(self, entity: str, entity_id: int) -> None:
        super().__init__(f"{entity} {entity_id} not found")


class NotFoundByPhone(DomainError):
    """No client has the number (404)."""


class Conflict(DomainError):
    """The request is well-formed but clashes with the current state."""


class EngineUnavailable(DomainError):
    """Temporal could not be reached; nothing was changed."""


class DatabaseUnavailable(DomainError):
    """PostgreSQL could not be reached (down, restarting, not answering, or no connection free in
    time: core.db.database_unavailable); the request's transaction did not commit."""

    def __init__(self, message: str = "the database is unavailable; try again shortly") -> None:
        super().__init__(message)


class InvalidRequest(DomainError):
    """The request contradicts the stored state (e.g. an end before the stored start), or the
    service's limits; `field` names the field at fault, when one is."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
