"""dsrlb.control."""
