"""The offline embedded default: scikit-learn's digits, small enough to run the whole grid here.

    python -m softlabel_ood.reproduce --config=configs/digits.py --workdir=/tmp/digits

Everything ships with scikit-learn, so nothing is downloaded: digits (8x8 grayscale, 10 classes)
are the ID data, patches of china.jpg the OE auxiliary set, and patches of flower.jpg plus four
synthetic noise sets the OOD test sets. The argument is the method (ce, ls, oe, kd,
kd_incorrect; ls and kd_incorrect with α = 0.3 unless --config.label_smoothing gives another),
or oe_finetune: OE fine-tuning of the finished ce run named in --config.oe.finetune_from.
"""

from softlabel_ood.configs import config_base, grid


def get_config(arg=None):
    method, finetune = config_base.parse_method_arg(arg)
    c = config_base.base_config(method, finetune=finetune)
    c.dataset = "digits"
    c.ood_datasets = ("flower_patches", "gaussian", "rademacher", "blobs", "uniform")
    # Natural-image patches are the near OOD set here, the synthetic noise the far ones.
    c.ood_groups.near = ("flower_patches",)
    c.ood_groups.far = ("gaussian", "rademacher", "blobs", "uniform")
    c.oe_dataset = "china_patches"  # used only when the method is oe
    c.oe.batch_size = 128
    c.num_ood_examples = 360  # about the size of the digits test split
    c.model = "small_cnn"
    c.dropout_rate = 0.0
    c.num_epochs = 15
    c.batch_size = 64
    c.eval_batch_size = 512
    c.learning_rate = 0.05
    if finetune:
        # The OE reference's proportions (a tenth of the epochs at a hundredth of the rate),
        # from the finished ce run named in --config.oe.finetune_from.
        c.num_epochs = 2
        c.learning_rate = 0.0005
    # A digits run is 315 steps and about a second of training, while an orbax checkpoint costs
    # ~0.1 s: only the final one is kept, and a killed run starts again from its beginning.
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 20
    c.grid = grid.paper_grid(ls_alphas=(0.1, 0.2, 0.3, 0.4, 0.5), kd_ls_alpha=0.3,
                             incorrect_alpha=0.3, seeds=(0, 1, 2))
    return c
