"""Request and response bodies, apart from the table models: one module per resource, as in
api/services (clients, dispatches, messages, statistics), the probes' in `health`, and what all
of them use (a page of a list, the error shape, shared field types) in `common`. Callers import
the names from the module: `from api.schemas.dispatches import DispatchCreate`."""
