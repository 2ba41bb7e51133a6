"""Database access: one pool (pool.py) through which every query runs on a
dedicated thread, the schema (schema.py), migrations (migrate.py) and the
query modules, one per kind of thing."""
