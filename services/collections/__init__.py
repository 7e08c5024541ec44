"""Collections: arrangements, delinquency worklist, compliance, alerts and disconnection holds."""
