"""Datasets as in-memory arrays: named sources, a run's sets, the input pipeline, augmentation."""
