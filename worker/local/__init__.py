"""The embedded stack for `make run` and the tests: Redis + RediSearch, PostgreSQL + pgvector, a stand-in LLM."""
