"""Fashion-MNIST split by class: near-OOD from the same dataset, far-OOD from others, offline.

    python -m softlabel_ood.reproduce --config=configs/fashion_mnist_split.py --workdir=/tmp/fms

The classifier learns classes 0-5 (T-shirt/top, trouser, pullover, dress, coat, sandal: the
36,000 training images of `fashion_mnist6`, tested on its 6,000 test images); the near-OOD set is
the test images of the held-out classes 6-9 (shirt, sneaker, bag, ankle boot:
`fashion_mnist_heldout`), the far-OOD sets those of configs/fashion_mnist.py. `ood_groups` names
the two, so `score` and the report show near and far OOD's means beside the per-set results.

Everything else is configs/fashion_mnist.py's: model, training, OE auxiliary set, the
`num_ood_examples` cap and the grid. The cap (2,000) applies to the near-OOD set too, a seeded
subset of its 4,000 images as for every real OOD set: every set then weighs the same in the
means, and the far sets are the very images of the Fashion-MNIST family; all 4,000 with
--config.num_ood_examples=4000 (which makes the generated sets 4,000 images as well).

By default both class subsets read the IDX files of Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist`); set --config.dataset_paths.fashion_mnist6="" and
--config.dataset_paths.fashion_mnist_heldout="" to read them through tfds instead. The argument
is the method (ce, ls, oe, kd, kd_incorrect; ls and kd_incorrect with α = 0.3 unless
--config.label_smoothing gives another), or oe_finetune: OE fine-tuning of the finished ce run
named in --config.oe.finetune_from.
"""

from softlabel_ood.configs import fashion_mnist
from softlabel_ood.data import datasets

NEAR_OOD = ("fashion_mnist_heldout",)


def get_config(arg=None):
    c = fashion_mnist.get_config(arg)
    c.dataset = "fashion_mnist6"
    c.dataset_paths.fashion_mnist = ""  # the whole set is read by no run of this family
    c.dataset_paths.fashion_mnist6 = datasets.FASHION_MNIST_IDX_DIR
    c.dataset_paths.fashion_mnist_heldout = datasets.FASHION_MNIST_IDX_DIR
    far = tuple(c.ood_datasets)
    c.ood_datasets = (*NEAR_OOD, *far)
    c.ood_groups.near = NEAR_OOD
    c.ood_groups.far = far
    return c
