"""Monitoring: the window of the inference log a check reads, the training reference it is compared with,
the checks and their verdict, alerts, reports, labels, replay and retraining on a newer window."""
