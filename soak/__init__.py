"""`make soak` (python -m soak): the service under fire, figures rather than a test.

The embedded stack with three worker processes and the simulator (soak.stack); three dispatches
laid out from the run's length and seed (soak.plan): one to 100,000 clients over Russia's zones
whose window opens in one zone and closes in another during the run, one of the per-client
shape, and one that is paused, edited and resumed; a fault loop (soak.faults) that kills and
stops workers, restarts Temporal and PostgreSQL and makes the gateway fail in four ways; a
bounded load of API users through Locust (soak.load, soak.locustfile); and at the end the
checks (soak.checks), printed as a table and written as JSON (soak.report).
"""
