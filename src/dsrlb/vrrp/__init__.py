"""dsrlb.vrrp."""
