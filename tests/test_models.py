import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlabel_ood import models


def init(model, shape, seed=0):
    return model.init(jax.random.key(seed), jnp.zeros(shape, jnp.float32), train=False)


def count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # The OE reference WRN-40-2 (its printed parameter count for CIFAR-10).
        ("wrn40_2", 2_243_546),
        # Zagoruyko & Komodakis' WRN-28-10 ("36.5M"), as the common PyTorch ports count it.
        ("wrn28_10", 36_479_194),
        # kuangliu/pytorch-cifar ResNet-18 / ResNet-34 ("11.2M" / "21.3M").
        ("resnet18", 11_173_962),
        ("resnet34", 21_282_122),
    ],
)
def test_parameter_counts(name, expected):
    model = models.create_model(name, num_classes=10)
    variables = jax.eval_shape(lambda: init(model, (1, 32, 32, 3)))
    assert count(variables["params"]) == expected


@pytest.mark.parametrize(
    ("name", "shape", "feature_dim"),
    [("small_cnn", (3, 8, 8, 1), 64), ("small_cnn", (3, 28, 28, 1), 64),
     ("wrn10_1", (3, 8, 8, 3), 64), ("wrn16_2", (3, 32, 32, 3), 128),
     ("resnet18", (3, 32, 32, 3), 512)],
)
def test_logits_and_features(name, shape, feature_dim):
    model = models.create_model(name, num_classes=7)
    variables = jax.eval_shape(lambda: init(model, shape))
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape), train=False), variables)
    assert (logits.shape, logits.dtype) == ((3, 7), jnp.float32)
    logits, features = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros(shape), train=False, return_features=True), variables)
    assert (features.shape, features.dtype) == ((3, feature_dim), jnp.float32)
    assert set(variables) == {"params", "batch_stats"}


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = models.create_model("small_cnn", num_classes=4, dtype="bfloat16")
    variables = init(model, (2, 8, 8, 1))
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    logits, features = model.apply(variables, x, train=False, return_features=True)
    assert logits.dtype == features.dtype == jnp.float32
    reference = models.create_model("small_cnn", num_classes=4).apply(variables, x, train=False)
    np.testing.assert_allclose(logits, reference, atol=0.1)


def test_batchnorm_follows_pytorch_momentum_and_eps():
    x = jax.random.normal(jax.random.key(0), (64, 3)) * 2.0 + 1.0
    bn = models._batch_norm(train=True, dtype=jnp.float32)
    variables = bn.init(jax.random.key(0), x)
    out, updates = bn.apply(variables, x, mutable=["batch_stats"])
    stats = updates["batch_stats"]
    # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch, from mean 0 and var 1.
    np.testing.assert_allclose(stats["mean"], 0.1 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * x.var(0), rtol=1e-5)
    np.testing.assert_allclose(out, (x - x.mean(0)) / jnp.sqrt(x.var(0) + 1e-5), atol=1e-5)


def test_batchnorm_statistics_change_in_training_and_are_used_in_evaluation():
    model = models.create_model("small_cnn", num_classes=4)
    variables = init(model, (1, 8, 8, 1))
    x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1)) * 3.0
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    for old, new in zip(jax.tree.leaves(variables["batch_stats"]),
                        jax.tree.leaves(updates["batch_stats"]), strict=True):
        assert not np.allclose(old, new)
    trained = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
    before = model.apply(variables, x, train=False)
    after = model.apply(trained, x, train=False)
    assert not np.allclose(before, after)
    # In evaluation a row's output does not depend on the rest of the batch.
    np.testing.assert_allclose(model.apply(trained, x[:1], train=False), after[:1], atol=1e-5)


def test_dropout_is_active_in_training_only():
    model = models.create_model("wrn10_1", num_classes=4, dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = init(model, x.shape)
    a, b = (model.apply(variables, x, train=True, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.key(s)})[0] for s in (0, 1))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model.apply(variables, x, train=False),
                                  model.apply(variables, x, train=False))


def test_conv_init_is_kaiming_normal_fan_out():
    variables = init(models.create_model("wrn10_1", num_classes=10), (1, 8, 8, 3))
    kernels = [v for path, v in jax.tree_util.tree_leaves_with_path(variables["params"])
               if "Conv" in jax.tree_util.keystr(path) and v.shape[:2] == (3, 3)]
    kernel = max(kernels, key=lambda v: v.size)  # 3x3x64x64: enough samples for the std
    np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / (9 * kernel.shape[-1])), rtol=0.05)


@pytest.mark.parametrize("name", ["wrn41_2", "wrn40_0", "resnet50", "vgg16"])
def test_unknown_models_are_rejected(name):
    with pytest.raises(ValueError, match=name):
        models.create_model(name, num_classes=10)
