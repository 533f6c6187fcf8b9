"""Prefect flows: wiring of tasks, and the `flowship` command line on top."""
