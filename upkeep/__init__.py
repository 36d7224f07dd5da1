"""The worker process's own work beside the Temporal workers it runs: the loops that bring
PostgreSQL and Temporal back in step (reconcile) and fold the message counts (loops), and its
probes and metrics endpoint (probes). Nothing here is a workflow or an activity."""
