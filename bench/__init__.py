"""`make bench`: throughput, delays, history sizes and memory of dispatches on the embedded stack.

Kept free of imports: the Temporal sandbox imports this package for the ceiling's workflows.
"""
