"""The embedded stack for development, tests and benchmarks: PostgreSQL from pgserver and the
Temporal CLI's dev server from PyPI, the simulator, the worker and the API as processes of
this machine. Not domain code: nothing in core/, api/, workflows/ or activities/ imports it."""
