"""The gateway in front of production: a real nginx, configured by flowship (what it routes to, what it allows)."""
