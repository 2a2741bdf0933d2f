"""dsrlb.agent."""
