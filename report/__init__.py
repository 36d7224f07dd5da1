"""The daily report: a Temporal Schedule runs its workflow every day; its activity gathers the
previous local day's figures and mails them. `python -m report` (make report) sends one now."""
