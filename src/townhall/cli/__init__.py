"""The ``townhall`` command: serve, token, speak, listen, storm, cluster."""
