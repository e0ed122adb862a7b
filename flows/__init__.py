"""Prefect flows (and, in flows.tasks, the Prefect tasks they are made of)."""
