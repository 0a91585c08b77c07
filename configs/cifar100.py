"""CIFAR-100 with the Outlier Exposure reference protocol (DESIGN.md §1).

The family's config lives in the package, softlabel_ood/configs/cifar100.py, so that it ships with a
plain `pip install`; this file keeps `--config=configs/cifar100.py` the same file in a clone.
"""

from softlabel_ood.configs.cifar100 import get_config  # noqa: F401
