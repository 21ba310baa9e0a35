"""Data preparation, training and evaluation."""
