"""Local platform tooling: the embedded PostgreSQL, `make up` / `make down`, the stack smoke test.

Nothing here is imported by DAGs or tasks; it only prepares and runs the processes around them.
"""
