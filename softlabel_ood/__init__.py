"""softlabel_ood: soft labels and out-of-distribution detection, in JAX.

Kept free of imports on purpose: `softlabel_ood.scoring` and `softlabel_ood.workdir.predictions`
must load with numpy and jax alone, so this package root may not pull in flax or tensorflow.
"""

__version__ = "0.1.0"
