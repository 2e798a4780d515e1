"""The spend ledger: spend, log and audit."""
