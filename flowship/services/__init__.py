"""The local services of `flowship up`: what `up`, `down` and `schedule` do (lifecycle), the processes (Prefect
server, MLflow server, worker) and what is registered on the Prefect server (work pools, deployments, automations)."""
