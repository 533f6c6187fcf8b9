"""The serving app: a FastAPI service around one model bundle (no Prefect, MLflow, DVC or Docker in here).

Importing this package has no side effects; `python -m flowship.serving` starts the service.
"""
