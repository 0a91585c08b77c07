"""Fashion-MNIST (28x28 grayscale, 60,000 training images), offline.

    python -m softlabel_ood.train --config=configs/fashion_mnist.py:ls --workdir=/tmp/fm_ls

By default the images come from the IDX files of Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist`); set --config.dataset_paths.fashion_mnist="" to read
them through tfds instead. OOD sets: scikit-learn's digits upsampled to 28x28, patches of
flower.jpg, and synthetic noise; patches of china.jpg are the OE auxiliary set.
The argument is the method (ce, ls, oe, kd, kd_incorrect; ls and kd_incorrect with
α = 0.3 unless --config.label_smoothing gives another), or oe_finetune: OE fine-tuning of
the finished ce run named in --config.oe.finetune_from.
"""

from softlabel_ood.configs import config_base, grid
from softlabel_ood.data import datasets


def get_config(arg=None):
    method, finetune = config_base.parse_method_arg(arg)
    c = config_base.base_config(method, finetune=finetune)
    c.dataset = "fashion_mnist"
    c.dataset_paths.fashion_mnist = datasets.FASHION_MNIST_IDX_DIR
    c.ood_datasets = ("digits28", "flower_patches", "gaussian", "rademacher", "blobs", "uniform")
    c.oe_dataset = "china_patches"  # used only when the method is oe
    c.num_ood_examples = 2000
    c.model = "small_cnn"
    c.dropout_rate = 0.0
    c.num_epochs = 10
    c.learning_rate = 0.05
    if finetune:
        # The OE reference's proportions (a tenth of the epochs at a hundredth of the rate),
        # from the finished ce run named in --config.oe.finetune_from.
        c.num_epochs = 1
        c.learning_rate = 0.0005
    c.checkpoint_every_steps = 500
    c.grid = grid.paper_grid(ls_alphas=(0.1, 0.2, 0.3, 0.4, 0.5), kd_ls_alpha=0.3,
                             incorrect_alpha=0.3, seeds=(0, 1, 2))
    return c
