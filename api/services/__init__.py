"""Service functions behind the routes and the admin pages: they speak the domain and raise
domain errors. One module per resource, imported as `from api.services import clients as
clients_service` (the module's name and `_service`):

- `clients`: the client directory: create, change (its unsent messages follow), opt out,
  delete, list.
- `dispatches`: a dispatch itself: create, edit, delete, list; its row with its counts, its
  events, what its workflow says of itself (progress).
- `control`: pause, resume, cancel: the workflow's `control` update, else the row changed
  here and the workflow signalled.
- `messages`: messages one by one, of a dispatch or of a client.
- `statistics`: numbers counted over messages or clients: counts by status and by route, sends
  over time, failure reasons, the remote's error rate, the size of an audience and its SMS.
- `routes`: the send routes: each configured one's definition and its circuit's health.
- `common`: what several of them use: the lookups by id, a page of rows, the Idempotency-Key
  check, the wake-up signal, a dispatch's text as it would be stored.

Where a dispatch's read lives, by what it answers: the dispatch itself (its row with its
messages counted, as `DispatchPublic`), its events, or its workflow's own account (progress),
in `dispatches`; its messages, in `messages`; numbers alone (its counts by status, sends over
time, failure reasons), in `statistics`, beside the same numbers over every dispatch.
"""
