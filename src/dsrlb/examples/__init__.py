"""dsrlb.examples."""
