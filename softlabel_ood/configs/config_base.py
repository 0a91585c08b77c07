"""Fields that every config file provides (DESIGN.md §8), with the OE reference's defaults.

Config files in `configs/` start from `base_config()` and change what differs for their dataset
family. Values that follow from others (steps per epoch, total steps, number of classes, image
shape) are computed in `train.py`, never here, so that a command-line override of one field
cannot leave a stale derived value behind.
"""

from __future__ import annotations

import ml_collections

from softlabel_ood import methods
from softlabel_ood.configs.config_validation import ConfigError

# Method names and dataset names without JAX: loading a config file imports neither flax nor optax.
from softlabel_ood.data import datasets
from softlabel_ood.scoring import score_records

FINETUNE_ARG = "oe_finetune"

# α of a run whose method reads it (ls, kd_incorrect) when its config argument names the method:
# the grid's ls teacher and kd_incorrect runs use it too (its record's default, `methods`).
METHOD_ALPHA = methods.LABEL_SMOOTHING.default

# The default of config.odin_pairs (softlabel_ood.training.odin, which reads it from here:
# the config side imports no JAX). The ODIN paper's setting for CIFAR (T = 1000, ε = 0.0014)
# with the ε grid around it that the selection rule (`softlabel_ood.scoring.odin_selection`)
# chooses from, and (1, 0), which is msp.
ODIN_PAIRS = ((1.0, 0.0), (1000.0, 0.0), (1000.0, 0.0005), (1000.0, 0.001),
              (1000.0, 0.0014), (1000.0, 0.002), (1000.0, 0.004))


def base_config(method: str | None, *, finetune: bool = False) -> ml_collections.ConfigDict:
    """The reference protocol of the Outlier Exposure code (Hendrycks et al. 2019) for CIFAR.

    With `finetune`, `oe.finetune_from` has no default: the run must name the finished run that
    it fine-tunes, and the config check refuses it until it does.
    """
    method = method or "ce"
    if method not in methods.BY_NAME:
        raise ConfigError(f"config argument: unknown method {method!r}; expected one of "
                          f"{', '.join((*methods.names(), FINETUNE_ARG))}")
    c = ml_collections.ConfigDict()
    c.method = method

    # Data. Names are those of `softlabel_ood.data.datasets`; local files are looked up by name in
    # `dataset_paths` (e.g. --config.dataset_paths.lsun_crop=/data/LSUN_C.npy).
    c.dataset = "cifar10"
    c.ood_datasets = ("gaussian", "rademacher", "blobs")
    c.oe_dataset = ""
    c.data_dir = ""  # tfds data_dir; empty means the tfds default (~/tensorflow_datasets).
    # One entry per dataset name, so that `--config.dataset_paths.<name>=...` works for any set.
    c.dataset_paths = ml_collections.ConfigDict({name: "" for name in datasets.NAMES})
    c.num_train_examples = 0  # 0 = all; a cap for quick experiments and tests.
    c.num_ood_examples = 2000  # size of synthetic OOD sets and cap for real ones (OE: 10000 // 5).
    # Named groups of OOD sets ({group: (name, ...)}) whose means `score` and the report show
    # beside the per-set results and the overall mean; they change no run.
    c.ood_groups = ml_collections.ConfigDict()

    # Model.
    c.model = "wrn40_2"
    c.dropout_rate = 0.3
    c.compute_dtype = "float32"

    # Soft labels: every method's hyperparameters from their records in `methods` (α for `ls`
    # and the incorrect-class mass for `kd_incorrect`, the KD temperature and weight, the OE
    # weight, ...), then what the teacher and the outliers need.
    _set_hyperparameters(c, method)
    c.kd.teacher_workdir = ""
    c.oe.batch_size = 256
    # Workdir of a finished run to fine-tune from; empty = from scratch.
    c.oe.finetune_from = ml_collections.config_dict.placeholder(str) if finetune else ""

    # Optimisation.
    c.num_epochs = 100
    c.batch_size = 128
    c.eval_batch_size = 500
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4
    c.seed = 0

    # Evaluation: the (temperature, epsilon) pairs whose ODIN scores predict saves for every
    # split (softlabel_ood/training/odin.py); () saves none. Each temperature with an epsilon > 0
    # costs a forward and a backward pass, each such pair one more forward pass.
    c.odin_pairs = ODIN_PAIRS
    # The score parameters that a run stores for `score`, at their records' defaults
    # (softlabel_ood/scoring/score_records.py): odin_selection, which saved pair the `odin`
    # score uses ("id_train", the largest T and then the ε with the highest mean id_train
    # score, or "fixed", OpenOOD's default T = 1000 and ε = 0.0014, a pair of odin_pairs);
    # pnorm_p, the p of the pnorm score (MaxLogit-pNorm).
    for name, parameter in score_records.config_parameters().items():
        c[name] = parameter.default

    # Bookkeeping. A checkpoint is saved at a multiple of checkpoint_every_steps once at least
    # checkpoint_min_seconds have passed since the run's last save (or its start), and always
    # at the last step: on an accelerator, a run that takes seconds saves once, not every few
    # hundred steps. Which steps hold checkpoints never changes a result.
    c.checkpoint_every_steps = 1000
    c.checkpoint_min_seconds = 60.0
    c.log_every_steps = 100

    # Speed; results do not depend on these (DESIGN.md §3).
    # Train steps in one compiled call, cut at log/epoch/checkpoint steps; 0 = automatic
    # (1 on CPU, 100 on GPU and TPU: see run_model.AUTO_STEPS_PER_CALL).
    c.steps_per_call = 0
    c.device_data_max_mb = 2048  # training arrays up to this size stay on every device
    return c


def _set_hyperparameters(c: ml_collections.ConfigDict, method: str) -> None:
    """Each registered hyperparameter at its default; a strict one that `method` does not read
    at its neutral value, the only value the validator then accepts."""
    for field, h in methods.hyperparameters().items():
        *groups, name = field.split(".")
        node = c
        for group in groups:
            if group not in node:
                node[group] = ml_collections.ConfigDict()
            node = node[group]
        node[name] = h.default if not h.strict or methods.reads(method, field) else h.neutral
    for group in ("kd", "oe"):  # the teacher's and the outliers' fields live there too
        if group not in c:
            c[group] = ml_collections.ConfigDict()


def parse_method_arg(arg: str | None) -> tuple[str, bool]:
    """`configs/<family>.py:<arg>` -> (method, fine-tune); `oe_finetune` is OE's fine-tuning."""
    if arg == FINETUNE_ARG:
        return "oe", True
    if arg and arg not in methods.BY_NAME:
        raise ConfigError(f"config argument: unknown method {arg!r}; expected one of "
                          f"{', '.join((*methods.names(), FINETUNE_ARG))}")
    return arg or "ce", False


def cifar_config(arg: str | None, *, dataset: str, other_cifar: str) -> ml_collections.ConfigDict:
    """CIFAR-10/100: the OE reference protocol, its OOD test sets, 300K Random Images for OE."""
    from softlabel_ood.configs import grid  # Local import: only the config files need it.

    # `finetune_grid`: the grid (for reproduce) with OE fine-tuned from ce beside OE from scratch.
    finetune_grid = arg == "finetune_grid"
    method, finetune = parse_method_arg(None if finetune_grid else arg)
    c = base_config(method, finetune=finetune)
    c.dataset = dataset
    c.ood_datasets = (
        "gaussian", "rademacher", "blobs", "textures", "svhn", "places365",
        "lsun_crop", "lsun_resize", "isun", other_cifar,
    )
    # OpenOOD v1.5's grouping: the other CIFAR is near-OOD; natural images of other sources
    # (textures, digits, scenes) far-OOD. The synthetic noise sets are a group of their own.
    c.ood_groups.near = (other_cifar,)
    c.ood_groups.far = ("textures", "svhn", "places365", "lsun_crop", "lsun_resize", "isun")
    c.ood_groups.noise = ("gaussian", "rademacher", "blobs")
    # The files of the ODIN and OE releases (docs/reproduction.md, "Datasets that tfds does not
    # provide").
    c.dataset_paths.lsun_crop = "~/ood_data/LSUN_C"
    c.dataset_paths.lsun_resize = "~/ood_data/LSUN_resize"
    c.dataset_paths.isun = "~/ood_data/iSUN"
    c.dataset_paths.random_300k = "~/ood_data/300K_random_images.npy"
    c.oe_dataset = "random_300k"  # used only when the method is oe
    # OE reference fine-tuning: 10 epochs at lr 0.001 from a finished ce run.
    oe_finetune = {"num_epochs": 10, "learning_rate": 0.001}
    if finetune:
        c.update(oe_finetune)
    # Three seeds: the claims' noise rule needs replicas (one seed decides nothing).
    c.grid = grid.paper_grid(ls_alphas=(0.1, 0.2, 0.3, 0.4, 0.5), kd_ls_alpha=0.3,
                             incorrect_alpha=0.3, seeds=(0, 1, 2),
                             oe_finetune=oe_finetune if finetune_grid else None)
    return c
