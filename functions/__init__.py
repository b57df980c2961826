"""Lambda handlers and the agents they serve."""
