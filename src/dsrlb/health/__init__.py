"""dsrlb.health."""
