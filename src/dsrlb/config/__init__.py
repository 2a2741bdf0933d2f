"""dsrlb.config."""
