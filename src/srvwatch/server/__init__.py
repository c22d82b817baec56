"""The sidecar: ``srvwatch serve`` (a DNS stub now; the admin server, config and outputs next)."""
