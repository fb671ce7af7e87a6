"""Background jobs: periodic work such as flushing and purging records."""
