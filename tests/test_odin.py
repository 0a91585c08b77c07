"""ODIN at predict time against a numpy transcription of the paper's formula, and the head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlabel_ood import models
from softlabel_ood.data import datasets
from softlabel_ood.training import evaluation, odin, runs_axis, train_step

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def numpy_odin(images_uint8, kernel, bias, temperature, epsilon):
    """ODIN (Liang et al. 2018) for the linear model logits = flatten(x) @ kernel + bias.

    The gradient of log softmax(z / T)_ŷ with respect to x is W (onehot(ŷ) - p) / T, with
    p = softmax(z / T): written out by hand, not differentiated.
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
    gradient = ((onehot - p) @ kernel.T / temperature).reshape(x.shape)
    # x' = x - ε sign(-∇) / std, the reference's per-channel division.
    perturbed = x - epsilon * np.sign(-gradient) / np.array(STD)
    return softmax((perturbed.reshape(len(x), -1) @ kernel + bias) / temperature).max(1)


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


def test_predict_odin_at_t1_eps0_is_msp_and_head_gives_the_logits(small_model):
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
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out["odin"][:, 0], (e / e.sum(1, keepdims=True)).max(1),
                               rtol=1e-6)
    e = np.exp((logits - logits.max(1, keepdims=True)) / 1000)
    np.testing.assert_allclose(out["odin"][:, 1], (e / e.sum(1, keepdims=True)).max(1),
                               rtol=1e-6)
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
