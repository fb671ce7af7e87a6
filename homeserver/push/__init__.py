"""Push: rules, their evaluation for each new event, notification counts, pushers."""
