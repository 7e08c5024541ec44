"""Credit notes: issues, applies and expires credit notes, from overpayments and staff requests."""
