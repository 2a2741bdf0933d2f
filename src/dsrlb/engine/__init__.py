"""dsrlb.engine."""
