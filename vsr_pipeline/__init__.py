"""vsr_pipeline: streaming x2 video super-resolution.

Importing the package does no work; the command line lives in :mod:`vsr_pipeline.cli`.
"""

__version__ = "0.1.0"
