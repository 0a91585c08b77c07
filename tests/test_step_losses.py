"""The loss the compiled train step reports is each method's formula (DESIGN.md §7).

The references are numpy transcriptions of the definitions, in float64, applied to the logits of
the same model and parameters on the same normalised batch. Every hyperparameter has a distinct
value, so a step that read the wrong field (α of ls for the kd weight, say) would not match.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood import methods, models
from softlabel_ood.data import augment
from softlabel_ood.training import batch_transforms, runs_axis
from softlabel_ood.training import train_step as ts
from tests.test_family_methods import rand_bbox
from tests.train_helpers import one_step_program

NUM_CLASSES = 5
IMAGE_SHAPE = (8, 8, 1)
MEAN, STD = (0.4,), (0.3,)
# Distinct values, none of them neutral: a field read in another's place changes the loss.
HYPERPARAMS = {"label_smoothing": 0.3, "kd_temperature": 2.5, "kd_weight": 0.7,
               "oe_weight": 1.6, "mixup_alpha": 0.45, "cutmix_alpha": 1.3,
               "cutmix_prob": 1.0, "logitnorm_temperature": 0.2, "focal_gamma": 2.2,
               "confidence_penalty_beta": 0.8}
# The config field each of them is (the reference formulas below take them by these names).
CONFIG_FIELD = {"label_smoothing": "label_smoothing", "kd_temperature": "kd.temperature",
                "kd_weight": "kd.weight", "oe_weight": "oe.weight", "mixup_alpha": "mixup.alpha",
                "cutmix_alpha": "cutmix.alpha", "cutmix_prob": "cutmix.prob",
                "logitnorm_temperature": "logitnorm.temperature", "focal_gamma": "focal.gamma",
                "confidence_penalty_beta": "confidence_penalty.beta"}
NUM_OUTLIERS = 6


@pytest.fixture(scope="module")
def mesh():
    return runs_axis.data_mesh(jax.devices()[:1])


def tiny_model():
    return models.SmallCNN(num_classes=NUM_CLASSES, channels=(4, 8), dropout_rate=0.0)


def fixed_batch(mesh, outliers=0):
    rng = np.random.default_rng(3)
    batch = {"image": rng.integers(0, 256, (12, *IMAGE_SHAPE)).astype(np.uint8),
             "label": rng.integers(0, NUM_CLASSES, 12).astype(np.int32)}
    if outliers:
        batch["outlier_image"] = rng.integers(0, 256, (outliers, *IMAGE_SHAPE)).astype(np.uint8)
    return jax.device_put(batch, NamedSharding(mesh, P(runs_axis.DATA_AXIS)))


def teacher_and_variables(model=None):
    """A teacher with its own weights and running statistics, so its logits are not the
    student's and not those of a fresh BatchNorm."""
    teacher = model or tiny_model()
    variables = teacher.init(jax.random.key(11), jnp.zeros((1, *IMAGE_SHAPE)), train=False)
    variables = jax.tree.map(lambda v: v + 0.05 * jnp.sin(jnp.arange(v.size).reshape(v.shape)),
                             variables)
    # Logits of a few units, so that the temperature matters.
    variables["params"] = jax.tree.map(lambda p: p * 8 if p.ndim == 2 else p,
                                       variables["params"])
    return teacher, variables


# ---- the formulas, in numpy


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))


def one_hot(labels):
    return np.eye(NUM_CLASSES)[labels]


def cross_entropy(logits, targets):
    return -(targets * log_softmax(logits)).sum(axis=-1)


def reference_loss(method, logits, labels, *, label_smoothing, kd_temperature, kd_weight,
                   oe_weight, teacher_logits=None, outlier_logits=None, targets=None,
                   **family):
    """The batch-mean loss of DESIGN.md §7, written out from the definitions. For a method with
    a batch transform, `logits` are the transformed batch's and `targets` its targets
    (`transformed`); `family` holds the soft-label family's hyperparameters."""
    k, hard = NUM_CLASSES, one_hot(labels)
    if methods.get(method).transform:  # cross-entropy to the transform's targets
        return cross_entropy(logits, targets).mean()
    if method == "logitnorm":
        norm = np.linalg.norm(logits, axis=-1, keepdims=True)
        return cross_entropy(logits / (family["logitnorm_temperature"] * norm + 1e-7),
                             hard).mean()
    if method == "focal":
        p_y = softmax(logits)[np.arange(len(labels)), labels]
        return (-(1 - p_y) ** family["focal_gamma"] * np.log(p_y)).mean()
    if method == "confidence_penalty":
        entropy = -(softmax(logits) * log_softmax(logits)).sum(axis=-1)
        return (cross_entropy(logits, hard) - family["confidence_penalty_beta"] * entropy).mean()
    if method == "ce":
        return cross_entropy(logits, hard).mean()
    if method == "ls":
        return cross_entropy(logits, (1 - label_smoothing) * hard + label_smoothing / k).mean()
    if method == "oe":
        # CE to the uniform distribution, averaged over the outlier batch.
        to_uniform = -log_softmax(outlier_logits).mean(axis=-1)
        return cross_entropy(logits, hard).mean() + oe_weight * to_uniform.mean()
    t = kd_temperature
    if method == "kd":
        p_teacher = softmax(teacher_logits / t)
        kl = (p_teacher * (log_softmax(teacher_logits / t) - log_softmax(logits / t))).sum(-1)
        return ((1 - kd_weight) * cross_entropy(logits, hard) + kd_weight * t**2 * kl).mean()
    assert method == "kd_incorrect"
    # The teacher's softmax at temperature T restricted to the incorrect classes, renormalised.
    incorrect = np.exp(teacher_logits / t) * (1 - hard)
    incorrect /= incorrect.sum(axis=-1, keepdims=True)
    targets = (1 - label_smoothing) * hard + label_smoothing * incorrect
    return cross_entropy(logits, targets).mean()


def test_the_reference_formulas_on_a_hand_worked_case():
    # Two classes would hide the incorrect-class renormalisation; K = 5, logits all zero.
    zeros = np.zeros((1, NUM_CLASSES))
    labels = np.array([2])
    hp = dict(HYPERPARAMS)
    assert np.isclose(reference_loss("ce", zeros, labels, **hp), np.log(5))
    assert np.isclose(reference_loss("ls", zeros, labels, **hp), np.log(5))
    assert np.isclose(reference_loss("logitnorm", zeros, labels, **hp), np.log(5))
    assert np.isclose(reference_loss("focal", zeros, labels, **hp), 0.8**2.2 * np.log(5))
    assert np.isclose(reference_loss("confidence_penalty", zeros, labels, **hp),
                      (1 - 0.8) * np.log(5))  # the uniform distribution's entropy is log K
    # Uniform outliers cost exactly log K.
    assert np.isclose(reference_loss("oe", zeros, labels, outlier_logits=zeros, **hp),
                      np.log(5) * (1 + 1.6))
    # A teacher equal to the student: KL = 0, only the hard term is left.
    assert np.isclose(reference_loss("kd", zeros, labels, teacher_logits=zeros, **hp),
                      0.3 * np.log(5))
    # Student logit 1 on class 0: its CE against any target is known in closed form.
    student = np.array([[1.0, 0, 0, 0, 0]])
    log_z = np.log(np.e + 4)
    teacher = np.array([[np.log(3) * 2.5, 0, 9.0, 0, 0]])  # softmax(t/T) ∝ (3, 1, ., 1, 1)
    # Incorrect classes 0, 1, 3, 4 get 0.3 · (3, 1, 1, 1) / 6; the true class 0.7.
    expected = (0.3 * 3 / 6) * (log_z - 1) + (0.7 + 0.3 * 3 / 6) * log_z
    assert np.isclose(reference_loss("kd_incorrect", student, labels, teacher_logits=teacher,
                                     **hp), expected)


def transformed(method, x, labels):
    """(images, targets) after the method's batch transform, written out in numpy on the
    normalised images `x` from the draws of the step's transform key (seed 5, step 0)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(5), 0), ts.TRANSFORM_STREAM)
    hard = one_hot(labels)
    if method == "mixup":
        partner, lam = batch_transforms.mixup_draws(
            key, np.float32(HYPERPARAMS["mixup_alpha"]), len(labels))
        partner, lam = np.asarray(partner), np.float64(lam)
        return lam * x + (1 - lam) * x[partner], lam * hard + (1 - lam) * hard[partner]
    assert method == "cutmix"
    draws = batch_transforms.cutmix_draws(key, np.float32(HYPERPARAMS["cutmix_alpha"]),
                                          np.float32(HYPERPARAMS["cutmix_prob"]), *x.shape[:3])
    assert bool(draws.mixes)  # cutmix_prob = 1
    partner = np.asarray(draws.partner)
    rows, columns = rand_bbox(*x.shape[1:3], np.float64(draws.lam), int(draws.row),
                              int(draws.column))
    mixed = x.copy()
    mixed[:, rows, columns] = x[partner][:, rows, columns]
    kept = 1 - (rows.stop - rows.start) * (columns.stop - columns.start) / (x.shape[1] * x.shape[2])
    assert kept < 1  # a box was pasted
    return mixed, kept * hard + (1 - kept) * hard[partner]


# ---- the compiled step against them


def step_inputs(mesh, method):
    """(step, state, hyperparams, batch, teacher, teacher_variables) for one step of `method`,
    augmentation off so that the forward pass can be recomputed exactly."""
    config = ts.StepConfig.for_method(method, num_classes=NUM_CLASSES, mean=MEAN, std=STD,
                                      augment=False)
    teacher, teacher_variables = (teacher_and_variables() if methods.needs_teacher(method)
                                  else (None, None))
    step = one_step_program(tiny_model(), config, mesh, teacher_model=teacher)
    state = ts.create_train_state(tiny_model(), config, image_shape=IMAGE_SHAPE, seed=5,
                                  mesh=mesh)
    # A confident student (logits of a few units, not a fresh head's tenths), so that the
    # loss moves with every hyperparameter.
    state = state.replace(params=jax.tree.map(
        lambda p: p * 8 if p.ndim == 2 else p, state.params))
    hp = ts.Hyperparams.create(seed=5, learning_rate=0.1, total_steps=100,
                               method_values=hyperparams_read(method))
    batch = fixed_batch(mesh, outliers=NUM_OUTLIERS if method == "oe" else 0)
    return step, state, hp, batch, teacher, teacher_variables


def hyperparams_read(method):
    """HYPERPARAMS as the train command gives them to `method`: the fields it does not read
    (its record in `methods`) at their neutral values."""
    return {CONFIG_FIELD[name]: methods.value_read(method, CONFIG_FIELD[name], value)
            for name, value in HYPERPARAMS.items()}


def forward(variables, images):
    """The student's training-mode logits (BatchNorm on the batch's statistics), float64."""
    return forward_normalised(variables, augment.normalize(images, MEAN, STD))


def forward_normalised(variables, x):
    logits, _ = tiny_model().apply(variables, jnp.asarray(x, jnp.float32), train=True,
                                   mutable=["batch_stats"])
    return np.asarray(logits, np.float64)


# Every defined method: a method added without a reference formula here fails this test.
@pytest.mark.parametrize("method", methods.names())
def test_step_loss_equals_its_formula(mesh, method):
    step, state, hp, batch, teacher, teacher_variables = step_inputs(mesh, method)
    labels = np.asarray(batch["label"])
    images = np.asarray(batch["image"])
    if method == "oe":
        # ID and outlier images pass through the model together (one BatchNorm batch).
        images = np.concatenate([images, np.asarray(batch["outlier_image"])])
    variables = jax.tree.map(np.asarray, state.variables)
    logits = forward(variables, images)
    inputs = {"logits": logits[:len(labels)], "labels": labels,
              "outlier_logits": logits[len(labels):]}
    if methods.get(method).transform:
        x, inputs["targets"] = transformed(
            method, np.asarray(augment.normalize(images, MEAN, STD), np.float64), labels)
        inputs["logits"] = forward_normalised(variables, x)
    if teacher is not None:
        x = augment.normalize(images, MEAN, STD)
        inputs["teacher_logits"] = np.asarray(teacher.apply(teacher_variables, x, train=False),
                                              np.float64)

    _, metrics = step(state, hp, batch, teacher_variables)
    reported = float(metrics["loss"])

    expected = reference_loss(method, **inputs, **HYPERPARAMS)
    np.testing.assert_allclose(reported, expected, rtol=1e-5)
    # The test can tell the fields apart: each of the method's fields, given another field's
    # value, moves the formula far beyond the tolerance.
    for field in HYPERPARAMS:
        for other, other_value in HYPERPARAMS.items():
            if other == field:
                continue
            swapped = reference_loss(method, **inputs, **{**HYPERPARAMS, field: other_value})
            if swapped != expected:
                assert abs(swapped - reported) > 1e-3 * abs(expected), (field, other)


# ---- the teacher's input


class Recording(nn.Module):
    """`inner`, calling `record(name_, input)` on every input it is applied to."""

    inner: nn.Module
    name_: str
    record: object  # a function: hashable, as the memoised step builders need

    @nn.compact
    def __call__(self, x, train: bool, **kwargs):
        jax.debug.callback(lambda v: self.record(self.name_, np.asarray(v)), x)
        return self.inner(x, train=train, **kwargs)


@pytest.mark.parametrize("method", ["kd", "kd_incorrect"])
def test_the_teacher_sees_the_students_augmented_batch(mesh, method):
    seen = []

    def record(name, x):
        seen.append((name, x))

    student = Recording(tiny_model(), "student", record)
    teacher = Recording(tiny_model(), "teacher", record)
    config = ts.StepConfig.for_method(method, num_classes=NUM_CLASSES, mean=MEAN, std=STD,
                                      augment=True)
    state = ts.create_train_state(student, config, image_shape=IMAGE_SHAPE, seed=5, mesh=mesh)
    seen.clear()  # the initialisation's input
    teacher_variables = teacher.init(jax.random.key(11), jnp.zeros((1, *IMAGE_SHAPE)),
                                     train=False)
    seen.clear()
    hp = ts.Hyperparams.create(seed=5, learning_rate=0.1, total_steps=100,
                               method_values=hyperparams_read(method))
    batch = fixed_batch(mesh)
    step = one_step_program(student, config, mesh, teacher_model=teacher)
    step(state, hp, batch, teacher_variables)
    jax.effects_barrier()

    students = [x for name, x in seen if name == "student"]
    teachers = [x for name, x in seen if name == "teacher"]
    assert students
    assert len(teachers) == 1
    for x in students:
        np.testing.assert_array_equal(teachers[0], x)
    # And that batch is the augmented one: the crops and flips moved pixels.
    unaugmented = np.asarray(augment.normalize(np.asarray(batch["image"]), MEAN, STD))
    assert teachers[0].shape == unaugmented.shape
    assert not np.array_equal(teachers[0], unaugmented)
