"""The face engine: find faces, follow them, restore each aligned face crop with a face SR network
and blend it into the upscaled frame (see :mod:`.engine`). The runtime only: training and evaluating
the face SR network is lab work, in :mod:`vsr_pipeline.train` (``face_train``, ``face_evaluate``,
``face_sources``)."""
