"""dsrlb.cli."""
