"""Prefect tasks: thin wrappers that read inputs, call the library, write outputs, return a reference."""
