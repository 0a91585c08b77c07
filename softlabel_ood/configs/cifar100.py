"""CIFAR-100 with the Outlier Exposure reference protocol (DESIGN.md §1).

    python -m softlabel_ood.train --config=configs/cifar100.py:ls --workdir=/tmp/cifar100_ls \
        --config.label_smoothing=0.1

The argument is the method (ce, ls, oe, kd, kd_incorrect; ls and kd_incorrect with
α = 0.3 unless --config.label_smoothing gives another), or oe_finetune: OE's fine-tuning recipe,
10 epochs at lr 0.001 from the finished ce run named in --config.oe.finetune_from.
"""

from softlabel_ood.configs import config_base


def get_config(arg=None):
    return config_base.cifar_config(arg, dataset="cifar100", other_cifar="cifar10")
