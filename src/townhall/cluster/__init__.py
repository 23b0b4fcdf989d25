"""Running townhall on many processes: a local NATS cluster and townhall processes."""
