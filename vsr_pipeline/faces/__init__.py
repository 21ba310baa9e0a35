"""The face engine: find faces, follow them, restore each aligned face crop with a face SR network
and blend it into the upscaled frame (see :mod:`.engine`)."""
