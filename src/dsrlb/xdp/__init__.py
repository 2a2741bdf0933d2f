"""dsrlb.xdp."""
