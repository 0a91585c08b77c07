import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlabel_ood.training import soft_labels

K = 5


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, K, size=8), jnp.int32)
    logits = jnp.asarray(rng.normal(size=(8, K)) * 3, jnp.float32)
    return labels, logits


def assert_rows_sum_to_one(targets):
    np.testing.assert_allclose(np.sum(targets, axis=-1), 1.0, rtol=1e-6)
    assert np.all(np.asarray(targets) >= 0)


# ---- label_smoothing


def test_label_smoothing_rows_sum_to_one(batch):
    labels, _ = batch
    for alpha in (0.0, 0.1, 0.5, 1.0):
        assert_rows_sum_to_one(soft_labels.label_smoothing(labels, K, alpha))


def test_label_smoothing_alpha_zero_is_one_hot(batch):
    labels, _ = batch
    np.testing.assert_array_equal(soft_labels.label_smoothing(labels, K, 0.0),
                                  jax.nn.one_hot(labels, K))


def test_label_smoothing_hand_worked():
    # (1 - 0.2) * [0, 1, 0, 0] + 0.2 / 4
    np.testing.assert_allclose(soft_labels.label_smoothing(jnp.array([1]), 4, 0.2),
                               [[0.05, 0.85, 0.05, 0.05]], rtol=1e-6)


# ---- distillation_targets


def test_distillation_targets_hand_worked():
    logits = jnp.array([[0.0, math.log(3.0)]])
    np.testing.assert_allclose(soft_labels.distillation_targets(logits, 1.0), [[0.25, 0.75]],
                               rtol=1e-6)
    # T = 2 halves the logits: odds sqrt(3) : 1.
    s = math.sqrt(3.0)
    np.testing.assert_allclose(soft_labels.distillation_targets(logits, 2.0),
                               [[1 / (1 + s), s / (1 + s)]], rtol=1e-6)


def test_distillation_targets_rows_sum_to_one(batch):
    _, logits = batch
    for t in (0.5, 1.0, 4.0, 20.0):
        assert_rows_sum_to_one(soft_labels.distillation_targets(logits, t))


# ---- teacher_incorrect


def test_teacher_incorrect_rows_sum_to_one_and_true_class_mass(batch):
    labels, logits = batch
    for alpha in (0.0, 0.3, 1.0):
        targets = soft_labels.teacher_incorrect(labels, logits, alpha)
        assert_rows_sum_to_one(targets)
        np.testing.assert_allclose(targets[jnp.arange(8), labels], 1.0 - alpha, rtol=1e-6)


def test_teacher_incorrect_alpha_zero_is_one_hot(batch):
    labels, logits = batch
    np.testing.assert_array_equal(soft_labels.teacher_incorrect(labels, logits, 0.0),
                                  jax.nn.one_hot(labels, K))


def test_teacher_incorrect_keeps_teacher_proportions(batch):
    labels, logits = batch
    targets = np.asarray(soft_labels.teacher_incorrect(labels, logits, 0.3))
    teacher = np.asarray(jax.nn.softmax(logits))
    for row, label in enumerate(np.asarray(labels)):
        incorrect = np.arange(K) != label
        np.testing.assert_allclose(targets[row, incorrect] / targets[row, incorrect].sum(),
                                   teacher[row, incorrect] / teacher[row, incorrect].sum(),
                                   rtol=1e-5)


def test_teacher_incorrect_hand_worked():
    # Incorrect classes 1, 2 have teacher odds 1 : 3 whatever the true-class logit.
    logits = jnp.array([[5.0, 0.0, math.log(3.0)]])
    np.testing.assert_allclose(soft_labels.teacher_incorrect(jnp.array([0]), logits, 0.4),
                               [[0.6, 0.1, 0.3]], rtol=1e-6)


def test_teacher_incorrect_exact_for_a_confident_teacher():
    # 1 - p_true underflows to 0 in float32 here; the targets must stay finite and exact.
    logits = jnp.array([[200.0, 0.0, math.log(3.0)]])
    targets = soft_labels.teacher_incorrect(jnp.array([0]), logits, 0.4)
    np.testing.assert_allclose(targets, [[0.6, 0.1, 0.3]], rtol=1e-6)


# ---- cross_entropy


def test_cross_entropy_hand_worked():
    ce = soft_labels.cross_entropy(jnp.zeros((2, 4)), jax.nn.one_hot(jnp.array([0, 3]), 4))
    np.testing.assert_allclose(ce, [math.log(4.0)] * 2, rtol=1e-6)


def test_cross_entropy_gradient_is_softmax_minus_target(batch):
    labels, logits = batch
    targets = soft_labels.label_smoothing(labels, K, 0.3)
    grad = jax.grad(lambda z: jnp.sum(soft_labels.cross_entropy(z, targets)))(logits)
    np.testing.assert_allclose(grad, jax.nn.softmax(logits) - targets, atol=1e-6)


# ---- kd_loss


def test_kd_loss_at_weight_zero_is_cross_entropy(batch):
    labels, logits = batch
    teacher = logits[::-1]
    kd = soft_labels.kd_loss(logits, teacher, labels, temperature=4.0, weight=0.0, num_classes=K)
    np.testing.assert_allclose(
        kd, soft_labels.cross_entropy(logits, jax.nn.one_hot(labels, K)), rtol=1e-6)


def test_kd_loss_hand_worked(batch):
    labels, logits = batch
    teacher = logits[::-1] * 0.5
    t, w = 3.0, 0.7
    kd = soft_labels.kd_loss(logits, teacher, labels, temperature=t, weight=w, num_classes=K)
    p_t = np.asarray(jax.nn.softmax(teacher / t))
    p_s = np.asarray(jax.nn.softmax(logits / t))
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)
    ce = -np.log(np.asarray(jax.nn.softmax(logits))[np.arange(8), np.asarray(labels)])
    np.testing.assert_allclose(kd, (1 - w) * ce + w * t**2 * kl, rtol=1e-5)
    # The soft term vanishes when the student matches the teacher.
    same = soft_labels.kd_loss(logits, logits, labels, temperature=t, weight=1.0, num_classes=K)
    np.testing.assert_allclose(same, 0.0, atol=1e-5)


# ---- outlier_exposure_loss


def test_outlier_exposure_is_log_k_for_constant_logits():
    for value in (0.0, -3.0, 17.0):
        np.testing.assert_allclose(
            soft_labels.outlier_exposure_loss(jnp.full((6, K), value)), math.log(K), rtol=1e-6)


def test_outlier_exposure_is_larger_otherwise(batch):
    _, logits = batch
    per_row = [soft_labels.outlier_exposure_loss(logits[i:i + 1]) for i in range(8)]
    assert all(v > math.log(K) for v in per_row)
    np.testing.assert_allclose(soft_labels.outlier_exposure_loss(logits), np.mean(per_row),
                               rtol=1e-6)
    np.testing.assert_allclose(soft_labels.outlier_exposure_loss(logits, weight=0.5),
                               0.5 * np.mean(per_row), rtol=1e-6)
