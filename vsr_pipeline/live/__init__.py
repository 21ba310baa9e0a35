"""Live streams: real-time pacing, graceful degradation, reconnects (see :mod:`.stream`)."""
