"""Sources, sinks and frame conversion (PyAV)."""
