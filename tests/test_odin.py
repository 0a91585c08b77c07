"""ODIN at predict time against a numpy transcription of the paper's formula, and the head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlabel_ood import models
from softlabel_ood.data import augment, datasets
from softlabel_ood.training import evaluation, odin, runs_axis, train_step

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def numpy_log_ratio(z, temperature):
    """log(K · max softmax(z / T)) in float64, as the definition reads."""
    e = np.exp((z - z.max(1, keepdims=True)) / temperature)
    return np.log(z.shape[1] * (e / e.sum(1, keepdims=True)).max(1))


def numpy_odin(images_uint8, kernel, bias, temperature, epsilon, cubic=None):
    """ODIN (Liang et al. 2018) for logits = flatten(x) @ kernel + bias (+ cubic terms), as
    log(K · max softmax), in float64.

    The gradient of the loss -log softmax(z / T)_ŷ with respect to x is W (p - onehot(ŷ)) / T,
    with p = softmax(z / T): written out by hand, not differentiated. `cubic` [D, K] adds
    ((x - x0)^3 @ cubic) to the logits, x0 the unperturbed input: its gradient vanishes at x0.
    """
    x = (images_uint8.astype(np.float64) / 255 - np.array(MEAN)) / np.array(STD)
    flat = x.reshape(len(x), -1)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    z = flat @ kernel + bias
    predicted = z.argmax(1)
    p = softmax(z / temperature)
    onehot = np.eye(kernel.shape[1])[predicted]
    gradient = ((p - onehot) @ kernel.T / temperature).reshape(x.shape)
    # The reference (facebookresearch/odin, OpenOOD): torch.ge(grad, 0) -> +1, else -1, then
    # x - ε · that / std, per channel.
    perturbed = x - epsilon * np.where(gradient >= 0, 1.0, -1.0) / np.array(STD)
    moved = perturbed.reshape(len(x), -1)
    z = moved @ kernel + bias
    if cubic is not None:
        z = z + (moved - flat) ** 3 @ cubic
    return numpy_log_ratio(z, temperature)


def test_odin_scores_match_the_formula_on_a_linear_model():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    kernel = rng.normal(size=(48, 5)) * 0.3
    bias = rng.normal(size=5)
    pairs = ((1.0, 0.0), (1.0, 0.01), (2.0, 0.0), (1000.0, 0.0014), (1000.0, 0.004))

    def apply_fn(x):
        return x.reshape(x.shape[0], -1) @ jnp.asarray(kernel, jnp.float32) \
            + jnp.asarray(bias, jnp.float32)

    got = np.asarray(jax.jit(lambda im: odin.odin_scores(apply_fn, im, MEAN, STD, pairs))(images))
    assert got.shape == (6, len(pairs))
    for p, (temperature, epsilon) in enumerate(pairs):
        expected = numpy_odin(images, kernel, bias, temperature, epsilon)
        np.testing.assert_allclose(got[:, p], expected, rtol=2e-5, err_msg=str((temperature,
                                                                                 epsilon)))
    # The perturbation raises the predicted class's softmax, which is what ODIN relies on.
    assert (got[:, 1] >= got[:, 0]).all()


def test_a_zero_gradient_pixel_moves_by_minus_epsilon_as_in_the_reference():
    # Pixels whose kernel rows are zero have an exactly zero gradient at the input (their cubic
    # term's derivative vanishes there), yet the perturbed logits see where they moved: the
    # reference's ge(grad, 0) moves them by -ε / std, where sign(grad) = 0 would not move them.
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 2, 2, 3), dtype=np.uint8)
    kernel = rng.normal(size=(12, 4))
    kernel[6:] = 0.0
    cubic = np.zeros((12, 4))
    cubic[6:] = rng.normal(size=(6, 4)) * 50
    pairs = ((10.0, 0.05),)

    def apply_fn(x, x0):
        flat = x.reshape(x.shape[0], -1)
        return flat @ jnp.asarray(kernel, jnp.float32) \
            + (flat - x0.reshape(x.shape[0], -1)) ** 3 @ jnp.asarray(cubic, jnp.float32)

    def program(im):
        x0 = augment.normalize(im, MEAN, STD)
        return odin.odin_scores(lambda x: apply_fn(x, x0), im, MEAN, STD, pairs)

    got = np.asarray(jax.jit(program)(images))[:, 0]
    expected = numpy_odin(images, kernel, np.zeros(4), 10.0, 0.05, cubic=cubic)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # Not moving the zero-gradient pixels (sign's rule) gives other scores.
    x = augment.normalize(images, MEAN, STD)
    gradient = jax.grad(lambda v: -jnp.sum(jax.nn.log_softmax(apply_fn(v, x) / 10.0)[
        jnp.arange(5), jnp.argmax(apply_fn(x, x), -1)]))(x)
    assert (np.asarray(gradient).reshape(5, -1)[:, 6:] == 0).all()
    unmoved = x - 0.05 * jnp.sign(gradient) / jnp.asarray(STD)
    other = np.asarray(odin.log_ratio(apply_fn(unmoved, x), 10.0))
    assert np.abs(other - got).min() > 1e-3


def test_log_ratio_ranks_as_float64_where_float32_max_softmax_ties():
    # At T = 1000 every max softmax is about 1/K: float32 p ties many distinct examples, the
    # saved log(K p) keeps them apart and in the order of a float64 computation.
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(20_000, 10)).astype(np.float32) * 2
    got = np.asarray(jax.jit(odin.log_ratio, static_argnums=1)(logits, 1000.0))
    expected = numpy_log_ratio(logits.astype(np.float64), 1000.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    p32 = jax.nn.softmax(jnp.asarray(logits) / 1000.0, axis=-1).max(-1)
    assert len(np.unique(np.asarray(p32))) < 0.8 * len(logits)  # float32 p: a quarter tied
    # Where float64 values are apart by more than float32's rounding (all but the closest few
    # pairs), the order is float64's exactly, and no two of them tie.
    order = np.argsort(expected)
    apart = np.diff(expected[order]) > 1e-6 * expected[order][1:]
    keep = order[np.r_[True, apart] & np.r_[apart, True]]
    assert len(keep) > 0.9 * len(logits)
    assert (np.diff(got[keep]) > 0).all()


@pytest.fixture(scope="module")
def small_model():
    model = models.create_model("small_cnn", num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
    return model, variables


def _dataset(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return datasets.ArrayDataset(name="toy", split="test",
                                 images=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
                                 labels=np.zeros(n, np.int32))


def test_predict_odin_at_eps0_is_the_tempered_softmax_and_head_gives_the_logits(small_model):
    model, variables = small_model
    config = train_step.StepConfig.for_method("ce", num_classes=10, mean=(0.3,), std=(0.2,))
    mesh = runs_axis.data_mesh()
    pairs = ((1.0, 0.0), (1000.0, 0.0), (1000.0, 0.0014))
    stacked = runs_axis.stack([variables], mesh)
    # 40 examples in batches of 16: the last batch is padded, and the padding dropped.
    split = evaluation.resident(_dataset(), mesh, 16)
    odin_program = odin.make_odin_program(model, config, mesh, pairs, runs=1, batch_size=16)
    out = {k: v[0] for k, v in evaluation.outputs(odin_program, stacked, split).items()}
    assert out["odin"].shape == (40, 3)
    assert out["odin"].dtype == np.float32
    logits = out["logits"].astype(np.float64)
    np.testing.assert_allclose(out["odin"][:, 0], numpy_log_ratio(logits, 1.0), rtol=1e-6)
    np.testing.assert_allclose(out["odin"][:, 1], numpy_log_ratio(logits, 1000.0), rtol=1e-5)
    # The ODIN step's logits and features are the eval step's.
    eval_program = evaluation.make_eval_program(model, config, mesh, runs=1, batch_size=16)
    plain = {k: v[0] for k, v in evaluation.outputs(eval_program, stacked, split).items()}
    assert "odin" not in plain
    np.testing.assert_array_equal(plain["logits"], out["logits"])
    np.testing.assert_array_equal(plain["features"], out["features"])
    # The saved head reproduces the logits from the features.
    kernel, bias = models.classifier_head(variables["params"])
    np.testing.assert_allclose(out["features"] @ np.asarray(kernel) + np.asarray(bias),
                               out["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["wrn10_1", "resnet18"])
def test_classifier_head_reproduces_the_logits_of_every_model(name):
    model = models.create_model(name, num_classes=7)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    logits, features = model.apply(variables, x, train=False, return_features=True)
    kernel, bias = models.classifier_head(variables["params"])
    assert kernel.shape == (features.shape[1], 7)
    assert kernel.dtype == bias.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(features) @ np.asarray(kernel) + np.asarray(bias),
                               np.asarray(logits), rtol=1e-5, atol=1e-5)


def test_default_pairs_hold_the_odin_paper_cifar_setting():
    assert (1000.0, 0.0014) in odin.DEFAULT_PAIRS
    assert (1.0, 0.0) in odin.DEFAULT_PAIRS
