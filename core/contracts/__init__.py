"""The Temporal side of the domain: workflow ids, signal names and every input and output.

One dataclass in and one out for each workflow, activity, signal, query and update, so that
fields can be added without breaking running workflows. They carry ids and small values, never
rows or audiences. One module per workflow: `dispatch`, `cohort`, `delivery`, `test_send` (a
dispatch's test send), `schedule` (a schedule's run), and `control` for the dispatch's pause,
resume and cancel; `shared` for what several use; `legacy` for what only the frozen first shape
uses. The daily report's own are in `report.contracts`.

Every dataclass here travels in workflow histories, recorded ones included
(tests/workflows/histories): add a field only with a default, never rename or remove one, and
keep a str enum's values (the converter carries a member as its string).
"""
