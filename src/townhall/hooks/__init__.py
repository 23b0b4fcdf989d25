"""Webhooks for the apps built on townhall, with no I/O: which events a change of a Space
makes (events), how a delivery is signed (signing), when a failed one is tried again
(backoff) and where they go (endpoints). The api's shell is townhall.api.webhooks."""
