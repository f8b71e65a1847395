"""All writes. Interfaces call one of these; each runs in one transaction with its audit record."""
