"""Bulk import of clients: a CSV or JSON-lines file, read and judged row by row in `reading`,
written in batches inside one transaction in `writing`."""
