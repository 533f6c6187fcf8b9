"""`flowship init`: a first params.yaml from the data itself (profile.py reads the table, draft.py writes params)."""
