"""The local services of `flowship up`: the processes (Prefect server, MLflow server, worker) and what is
registered on the Prefect server (work pools, deployments, automations)."""
