"""CIFAR-10 with the Outlier Exposure reference protocol (DESIGN.md §1).

The family's config lives in the package, softlabel_ood/configs/cifar10.py, so that it ships with a
plain `pip install`; this file keeps `--config=configs/cifar10.py` the same file in a clone.
"""

from softlabel_ood.configs.cifar10 import get_config  # noqa: F401
