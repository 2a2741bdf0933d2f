"""dsrlb: a layer-4 server load balancer for Linux with Direct Server Return, NAT and an XDP fast path."""

__version__ = "0.1.0"
