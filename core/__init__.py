"""Shared domain code: settings, database, models, Temporal contracts, phones and send windows."""
