"""The rules of a Space, with no I/O: roster, requests, permissions, reactions, snapshots."""
