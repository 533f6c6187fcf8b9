"""One module per external system; each is the only importer of its library."""
