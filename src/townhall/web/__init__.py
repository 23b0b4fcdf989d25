"""The browser app townhall serves at ``/``: plain ES modules, no build step."""
