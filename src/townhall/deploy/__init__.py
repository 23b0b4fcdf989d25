"""Deploying townhall on real hosts: from a list of hosts and their roles, each host's
nats-server config and systemd units (``townhall deploy``). Pure functions return file
contents; only townhall.cli.deploy writes them."""
