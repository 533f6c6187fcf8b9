"""The training pipeline's stages (ingest, validate, prepare, train, evaluate), the gate, lineage and
batch scoring: the code `dvc repro` and the Prefect tasks both run."""
