"""dsrlb.daemon: the composition root (config -> desired state -> changes -> engine) and its drivers."""
