"""The training methods (DESIGN.md §7, §8) and what each one reads, with no JAX in sight.

This is the one place that says what a method is: its loss, its batch transform, whether it
reads a teacher or an outlier set, and the hyperparameters it reads, each declared once with its
config field, default, neutral value, allowed values and meaning. The config defaults and
validator, the train step's hyperparameters, the predictions manifest and the report all derive
from these records. A new method is one `register(Method(...))` and its JAX functions: a loss in
`training/method_losses.py` (unless it shares one) and, if it changes the batch, a transform in
`training/batch_transforms.py`.

Config files, the config validator and the grid import this module; keeping it free of JAX lets
a config load without flax or optax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """A number that a method's loss or batch transform reads: a config field, and a traced
    argument of the compiled step (so a sweep of it shares one program)."""

    field: str  # the dotted config field, e.g. "label_smoothing", "kd.temperature"
    meaning: str  # one line, for --help and the docs
    default: float  # the family configs' value
    neutral: float  # its value in the step for a method that does not read it
    allowed: str  # the values a method that reads it may take, in words
    ok: Callable[[float], bool]  # ... as a test of a finite number
    # Its key in the predictions manifest's `run` block; default: the field with "_" for ".".
    manifest_key: str = ""
    symbol: str = ""  # how tables and figures name it (α); default: the field
    # A strict field holds `neutral` for a method that does not read it (the config default
    # then, and the only value the validator accepts), and the manifest records `neutral`; a
    # lenient one keeps its family default there, and the manifest records null.
    strict: bool = True
    # What a method that reads it trains at `neutral`, said when its rule refuses that value
    # there (ls at α = 0 is ce); "" when nothing simpler is trained there.
    at_neutral: str = ""

    @property
    def key(self) -> str:
        return self.manifest_key or self.field.replace(".", "_")

    @property
    def label(self) -> str:
        return self.symbol or self.field

    def unread_value(self):
        """What the manifest records for a method that does not read it."""
        return self.neutral if self.strict else None


LABEL_SMOOTHING = Hyperparameter(
    "label_smoothing", "α of ls; the incorrect-class mass of kd_incorrect",
    # 0.3 when a config argument names a method that reads it: the grid's ls teacher and
    # kd_incorrect runs; at 0 ls would be cross-entropy (method ce) under another name.
    default=0.3, neutral=0.0, allowed="a number in (0, 1)", ok=lambda v: 0 < v < 1,
    manifest_key="alpha", symbol="α",
    at_neutral="the method trains as one that does not read it")
KD_TEMPERATURE = Hyperparameter(
    "kd.temperature", "the teacher's softmax temperature T", default=4.0, neutral=1.0,
    allowed="a number > 0", ok=lambda v: v > 0, strict=False)
KD_WEIGHT = Hyperparameter(
    "kd.weight", "the weight w of the distillation term", default=0.9, neutral=0.0,
    allowed="a number in [0, 1]", ok=lambda v: 0 <= v <= 1, strict=False)
OE_WEIGHT = Hyperparameter(
    "oe.weight", "the weight of the outliers' cross-entropy to the uniform distribution",
    default=0.5, neutral=0.0, allowed="a number >= 0", ok=lambda v: v >= 0, strict=False)

# The soft-label family's hyperparameters (DESIGN §7: each default's source).
MIXUP_ALPHA = Hyperparameter(
    "mixup.alpha", "a of mixup: each batch is mixed with a permutation of itself by one "
    "λ ~ Beta(a, a)", default=0.2, neutral=0.0, allowed="a number > 0", ok=lambda v: v > 0,
    symbol="a", at_neutral="no two images are mixed (Beta(a, a) puts λ at 0 or 1 as a -> 0)")
CUTMIX_ALPHA = Hyperparameter(
    "cutmix.alpha", "a of CutMix: the pasted box's area is about 1 - λ, λ ~ Beta(a, a)",
    default=1.0, neutral=0.0, allowed="a number > 0", ok=lambda v: v > 0, symbol="a")
CUTMIX_PROB = Hyperparameter(
    "cutmix.prob", "the probability that CutMix mixes a batch; 0.5 in Yun et al.'s CIFAR runs",
    default=0.5, neutral=0.0, allowed="a number in [0, 1]", ok=lambda v: 0 <= v <= 1,
    symbol="prob")
LOGITNORM_TEMPERATURE = Hyperparameter(
    "logitnorm.temperature", "τ of LogitNorm, whose loss is CE(z / (τ·‖z‖ + 1e-7), y); 0.04 is "
    "OpenOOD v1.5's, Wei et al.'s code uses 0.01", default=0.04, neutral=0.0,
    allowed="a number > 0", ok=lambda v: v > 0, symbol="τ")
FOCAL_GAMMA = Hyperparameter(
    "focal.gamma", "γ of the focal loss −(1 − p_y)^γ·log p_y; 3 is Mukhoti et al.'s FL-3, 0 "
    "cross-entropy", default=3.0, neutral=0.0, allowed="a number >= 0", ok=lambda v: v >= 0,
    symbol="γ")
CONFIDENCE_PENALTY_BETA = Hyperparameter(
    "confidence_penalty.beta", "β of the confidence penalty CE(z, y) − β·H(softmax(z)); 0.1 is "
    "this project's choice (DESIGN §7)", default=0.1, neutral=0.0, allowed="a number >= 0",
    ok=lambda v: v >= 0, symbol="β")

# Config fields that a method reads through its teacher or its outliers (not numbers of the
# step), and the value a method that does not read them must leave, "" for none.
TEACHER_FIELDS = ("kd.teacher_workdir",)
OUTLIER_FIELDS = ("oe_dataset", "oe.batch_size", "oe.finetune_from")
REFUSED_UNLESS_READ = {"kd.teacher_workdir": "", "oe.finetune_from": ""}


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    summary: str
    # The name of its batch loss in `training.method_losses.LOSSES`. Methods with the same loss
    # (and transform, teacher and outlier needs) run one compiled program: ce is the soft-target
    # cross-entropy with α = 0, so ce trains with the ls sweep.
    loss: str
    hyperparameters: tuple[Hyperparameter, ...] = ()
    # A name of `training.batch_transforms.TRANSFORMS`: it changes the batch's images and targets
    # before the forward pass (mixup mixes them); "" for none.
    transform: str = ""
    needs_teacher: bool = False  # reads a finished run's model (kd.teacher_workdir)
    needs_outliers: bool = False  # reads an auxiliary outlier set (oe_dataset) while training
    # The hyperparameter the report sweeps as the method's strength (its field), "" for none.
    strength: str = ""

    @property
    def reads(self) -> tuple[str, ...]:
        """Every config field whose value changes what this method learns."""
        return ((TEACHER_FIELDS if self.needs_teacher else ())
                + (OUTLIER_FIELDS if self.needs_outliers else ())
                + tuple(h.field for h in self.hyperparameters))


BY_NAME: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds a method; a hyperparameter field that another method declares must be the same
    record there, so that each field has one default, rule and meaning."""
    if method.name in BY_NAME:
        raise ValueError(f"method {method.name!r} is already registered")
    known = hyperparameters()
    for h in method.hyperparameters:
        if h.field in known and known[h.field] != h:
            raise ValueError(f"method {method.name!r}: hyperparameter {h.field!r} differs from "
                             f"the record that other methods declare")
    if method.strength and method.strength not in {h.field for h in method.hyperparameters}:
        raise ValueError(f"method {method.name!r}: strength {method.strength!r} is not one of "
                         f"its hyperparameters")
    BY_NAME[method.name] = method
    return method


def names() -> tuple[str, ...]:
    return tuple(BY_NAME)


def get(name: str) -> Method:
    if name not in BY_NAME:
        raise KeyError(f"unknown method {name!r}; expected one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


def hyperparameters() -> dict[str, Hyperparameter]:
    """Every registered method's hyperparameters by config field, in registration order."""
    out: dict[str, Hyperparameter] = {}
    for method in BY_NAME.values():
        for h in method.hyperparameters:
            out.setdefault(h.field, h)
    return out


def needs_teacher(method: str) -> bool:
    return get(method).needs_teacher


def needs_outliers(method: str) -> bool:
    return get(method).needs_outliers


def reads(method: str, field: str) -> bool:
    return field in get(method).reads


def readers(field: str) -> tuple[str, ...]:
    """The methods that read `field`."""
    return tuple(m.name for m in BY_NAME.values() if field in m.reads)


def neutral(field: str) -> float:
    return hyperparameters()[field].neutral


def value_read(method: str, field: str, value):
    """`value` if `method` reads the hyperparameter `field`, else its neutral value."""
    return value if reads(method, field) else neutral(field)


def strength(method: str) -> Hyperparameter | None:
    """The hyperparameter the report sweeps for `method`; None for a method without one or of
    another version (a run directory read back may name a method unknown here)."""
    record = BY_NAME.get(method)
    if record is None or not record.strength:
        return None
    return hyperparameters()[record.strength]


# The paper's methods (DESIGN §7).
register(Method("ce", "cross-entropy with one-hot labels", loss="cross_entropy"))
register(Method("ls", "label smoothing: (1 - α)·onehot + α/K", loss="cross_entropy",
                hyperparameters=(LABEL_SMOOTHING,), strength="label_smoothing"))
register(Method("oe", "outlier exposure: cross-entropy + oe.weight · CE(outlier logits, uniform)",
                loss="outlier_exposure", needs_outliers=True, hyperparameters=(OE_WEIGHT,)))
register(Method("kd", "knowledge distillation from a teacher at temperature kd.temperature",
                loss="distillation", needs_teacher=True,
                hyperparameters=(KD_TEMPERATURE, KD_WEIGHT)))
register(Method("kd_incorrect", "(1 - α)·onehot + α·(teacher's incorrect-class distribution)",
                loss="teacher_incorrect", needs_teacher=True,
                hyperparameters=(KD_TEMPERATURE, LABEL_SMOOTHING), strength="label_smoothing"))

# The soft-label family (DESIGN §7): other ways to soften a classifier's target or confidence.
register(Method("mixup", "mixup: CE(f(λx + (1 - λ)x[j]), λy + (1 - λ)y[j]), λ ~ Beta(a, a)",
                loss="cross_entropy", transform="mixup", hyperparameters=(MIXUP_ALPHA,),
                strength="mixup.alpha"))
register(Method("cutmix", "CutMix: a box of x[j] pasted into x, the target mixed by the kept area",
                loss="cross_entropy", transform="cutmix",
                hyperparameters=(CUTMIX_ALPHA, CUTMIX_PROB), strength="cutmix.alpha"))
register(Method("logitnorm", "LogitNorm: CE(z / (τ·‖z‖ + 1e-7), y); predictions keep z",
                loss="logit_norm", hyperparameters=(LOGITNORM_TEMPERATURE,),
                strength="logitnorm.temperature"))
register(Method("focal", "focal loss: −(1 − p_y)^γ·log p_y", loss="focal",
                hyperparameters=(FOCAL_GAMMA,), strength="focal.gamma"))
register(Method("confidence_penalty", "confidence penalty: CE(z, y) − β·H(softmax(z))",
                loss="confidence_penalty", hyperparameters=(CONFIDENCE_PENALTY_BETA,),
                strength="confidence_penalty.beta"))
