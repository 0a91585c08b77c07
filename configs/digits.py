"""The offline embedded default: scikit-learn's digits, small enough to run the whole grid here.

The family's config lives in the package, softlabel_ood/configs/digits.py, so that it ships with a
plain `pip install`; this file keeps `--config=configs/digits.py` the same file in a clone.
"""

from softlabel_ood.configs.digits import get_config  # noqa: F401
