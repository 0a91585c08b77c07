"""Fashion-MNIST (28x28 grayscale, 60,000 training images), offline.

The family's config lives in the package, softlabel_ood/configs/fashion_mnist.py, so that it
ships with a plain `pip install`; this file keeps `--config=configs/fashion_mnist.py` the same
file in a clone.
"""

from softlabel_ood.configs.fashion_mnist import get_config  # noqa: F401
