"""townhall storm: simulated crowds against a Space (Sans-I/O cores + thin asyncio shells)."""
