"""Start-up code: the `paydesk` command, the launcher, the embedded servers, the service registry and the
sample billing data. Services and `shared` never import from here."""
