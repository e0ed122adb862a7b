"""Prefect tasks: thin wrappers over the core library with retries, caching and logging."""
