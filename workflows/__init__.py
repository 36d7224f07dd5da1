"""Pure orchestration: the dispatch workflow and the per-client delivery workflow."""
