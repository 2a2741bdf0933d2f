"""dsrlb.sync."""
