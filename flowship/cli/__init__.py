"""The `flowship` command line."""
