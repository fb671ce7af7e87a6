"""Real client libraries (matrix-nio, ...) and real counterparts driven against a running Hearth process."""
