"""dsrlb.afpacket."""
