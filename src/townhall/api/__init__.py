"""The api role: the Spaces control API over HTTP."""
