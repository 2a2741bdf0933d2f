"""dsrlb.netlink."""
