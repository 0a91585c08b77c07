"""TensorFlow (which tfds reads through) imported without its C++ start-up lines.

They would come before the one line that a refused run prints (DESIGN.md §4). TensorFlow only
decodes records here, so turning its oneDNN math off changes no number; a value already set in
the environment is kept.
"""

import os


def import_tensorflow_datasets():
    """-> (tensorflow, tensorflow_datasets); importing TensorFlow costs seconds, so callers
    import it here, when a tfds set is first opened."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its notice ignores the log level
    import tensorflow as tf
    import tensorflow_datasets as tfds
    return tf, tfds
