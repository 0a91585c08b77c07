"""Fashion-MNIST split by class: classes 0-5 are the ID data, the test images of 6-9 near-OOD.

The family's config lives in the package, softlabel_ood/configs/fashion_mnist_split.py, so that
it ships with a plain `pip install`; this file keeps `--config=configs/fashion_mnist_split.py`
the same file in a clone.
"""

from softlabel_ood.configs.fashion_mnist_split import get_config  # noqa: F401
