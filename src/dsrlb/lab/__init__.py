"""dsrlb.lab."""
