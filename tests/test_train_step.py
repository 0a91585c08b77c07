import math
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood import models
from softlabel_ood import train_step as ts

NUM_CLASSES = 4
IMAGE_SHAPE = (8, 8, 1)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mesh():
    return ts.data_mesh(jax.devices()[:1])


def tiny_model(**kwargs):
    return models.SmallCNN(num_classes=NUM_CLASSES, channels=(8, 16), **kwargs)


def step_config(method="ce", **kwargs):
    kwargs.setdefault("augment", False)
    return ts.StepConfig(method=method, num_classes=NUM_CLASSES, seed=0, mean=(0.5,),
                         std=(0.25,), **kwargs)


def learnable_batch(mesh, seed=0, batch_size=32, outliers=0):
    """Class k lights up quadrant k of an 8x8 image, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
    images = rng.integers(0, 80, (batch_size, *IMAGE_SHAPE))
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 150
    batch = {"image": images.astype(np.uint8), "label": labels}
    if outliers:
        batch["outlier_image"] = rng.integers(0, 256, (outliers, *IMAGE_SHAPE)).astype(np.uint8)
    return jax.device_put(batch, NamedSharding(mesh, P(ts.DATA_AXIS)))


def make_state(mesh, model=None, learning_rate=0.3, total_steps=1000, seed=0, **kwargs):
    tx = ts.make_optimizer(learning_rate=learning_rate, weight_decay=5e-4,
                           total_steps=total_steps, **kwargs)
    return ts.create_train_state(model or tiny_model(), tx, image_shape=IMAGE_SHAPE, seed=seed,
                                 mesh=mesh)


def copy_tree(tree):
    return jax.tree.map(np.asarray, tree)


# ---- optimizer


def oe_reference_lr(step, total, lr):
    """The OE code: lr * cosine_annealing(step, total, 1, 1e-6 / lr)."""
    lr_min = 1e-6 / lr
    return lr * (lr_min + (1 - lr_min) * 0.5 * (1 + np.cos(step / total * np.pi)))


def test_schedule_matches_the_oe_reference():
    schedule = ts.oe_cosine_schedule(0.1, 100)
    # The reference steps its scheduler before its optimizer: update k runs at lr_{k+1}.
    for k in (0, 1, 37, 50, 98, 99):
        np.testing.assert_allclose(schedule(k), oe_reference_lr(k + 1, 100, 0.1), rtol=1e-5,
                                   atol=1e-8)
    np.testing.assert_allclose(schedule(99), 1e-6, rtol=1e-4)
    np.testing.assert_allclose(schedule(500), 1e-6, rtol=1e-4)


def test_sgd_matches_torch_sgd_with_nesterov_and_weight_decay():
    lr, wd, mu, total = 0.1, 5e-4, 0.9, 10
    tx = ts.make_optimizer(learning_rate=lr, weight_decay=wd, total_steps=total)
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    state = tx.init(params)
    # torch.optim.SGD(nesterov=True, dampening=0), written out.
    theta, buf = np.array([1.0, -2.0, 0.5]), None
    for k in range(3):
        grad = np.array([0.3, -0.1, 0.2]) * (k + 1)
        updates, state = tx.update({"w": jnp.asarray(grad, jnp.float32)}, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        d = grad + wd * theta
        buf = d if buf is None else mu * buf + d
        theta = theta - oe_reference_lr(k + 1, total, lr) * (d + mu * buf)
    np.testing.assert_allclose(params["w"], theta, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_other_optimizers(optimizer):
    tx = ts.make_optimizer(learning_rate=1e-3, weight_decay=1e-4, total_steps=10,
                           optimizer=optimizer)
    params = {"w": jnp.ones(3)}
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    assert np.all(np.asarray(updates["w"]) < 0)


def test_bad_optimizer_and_method_are_rejected():
    with pytest.raises(ValueError, match="rmsprop"):
        ts.make_optimizer(learning_rate=0.1, weight_decay=0.0, total_steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="mixup"):
        step_config("mixup")


# ---- state


def test_create_train_state_is_deterministic_and_replicated(mesh):
    a, b, c = make_state(mesh), make_state(mesh), make_state(mesh, seed=1)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)
    kernel = lambda state: state.params["Conv_0"]["kernel"]
    assert not np.array_equal(kernel(a), kernel(c))
    assert int(a.step) == 0
    assert a.step.dtype == jnp.int32
    for leaf in jax.tree.leaves(a):
        assert leaf.sharding.spec == P()


# ---- train step


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("ce", {}),
        ("ls", {"label_smoothing": 0.2}),
        ("oe", {"oe_weight": 0.5}),
        ("kd", {"kd_temperature": 2.0, "kd_weight": 0.5}),
        ("kd_incorrect", {"kd_temperature": 2.0, "label_smoothing": 0.3}),
    ],
)
def test_every_method_lowers_the_loss(mesh, method, kwargs):
    config = step_config(method, **kwargs)
    teacher, teacher_variables = None, None
    if method in ts.TEACHER_METHODS:
        teacher = tiny_model()
        teacher_variables = teacher.init(jax.random.key(7), jnp.zeros((1, *IMAGE_SHAPE)),
                                         train=False)
    step = ts.make_train_step(tiny_model(), config, mesh, teacher_model=teacher)
    state = make_state(mesh)
    batch = learnable_batch(mesh, outliers=16 if method == "oe" else 0)
    teacher_before = copy_tree(teacher_variables)
    losses = []
    for _ in range(10):
        state, metrics = step(state, batch, teacher_variables)
        losses.append(float(metrics["loss"]))
        assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses
    assert int(state.step) == 10
    # The teacher is read, never trained.
    for x, y in zip(jax.tree.leaves(teacher_before), jax.tree.leaves(teacher_variables),
                    strict=True):
        np.testing.assert_array_equal(x, y)


def test_teacher_methods_need_a_teacher(mesh):
    with pytest.raises(ValueError, match="teacher"):
        ts.make_train_step(tiny_model(), step_config("kd"), mesh)


def test_step_compiles_once_and_reports_metrics(mesh):
    traces = []

    class CountingModel(nn.Module):
        @nn.compact
        def __call__(self, x, train, return_features=False):
            traces.append(1)  # runs once per trace, not per execution
            return tiny_model(dropout_rate=0.2)(x, train, return_features)

    model = CountingModel()
    state = make_state(mesh, model=model, learning_rate=0.1, total_steps=4)
    config = step_config("ce", augment=True)
    step = ts.make_train_step(model, config, mesh)
    schedule = ts.oe_cosine_schedule(0.1, 4)
    params_before = copy_tree(state.params)
    stats_before = copy_tree(state.batch_stats)
    traced_after_first = None
    for k in range(3):
        state, metrics = step(state, learnable_batch(mesh, seed=k), None)
        traced_after_first = traced_after_first or len(traces)
        assert set(metrics) == {"loss", "accuracy", "learning_rate"}
        assert all(v.shape == () and v.dtype == jnp.float32 for v in metrics.values())
        np.testing.assert_allclose(metrics["learning_rate"], schedule(k), rtol=1e-6)
    assert len(traces) == traced_after_first
    # Training changes the parameters and the BatchNorm running statistics.
    assert not np.allclose(jax.tree.leaves(state.params)[0], jax.tree.leaves(params_before)[0])
    for old, new in zip(jax.tree.leaves(stats_before), jax.tree.leaves(state.batch_stats),
                        strict=True):
        assert not np.allclose(old, new)


def test_bfloat16_step_keeps_float32_state(mesh):
    model = tiny_model(dtype=jnp.bfloat16)
    state = make_state(mesh, model=model)
    step = ts.make_train_step(model, step_config("ls", label_smoothing=0.1,
                                                 compute_dtype="bfloat16"), mesh)
    state, metrics = step(state, learnable_batch(mesh), None)
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert math.isfinite(float(metrics["loss"]))


# ---- eval step


def test_eval_step_uses_running_statistics(mesh):
    model = tiny_model()
    state = make_state(mesh, model=model)
    config = step_config("ce")
    state, _ = ts.make_train_step(model, config, mesh)(state, learnable_batch(mesh), None)
    eval_step = ts.make_eval_step(model, config, mesh)
    batch = dict(learnable_batch(mesh, seed=5, batch_size=8))
    batch["mask"] = jnp.ones(8, bool)
    out = eval_step(state.variables, batch)
    assert (out["logits"].shape, out["logits"].dtype) == ((8, NUM_CLASSES), jnp.float32)
    assert (out["features"].shape, out["features"].dtype) == ((8, 16), jnp.float32)
    x = (np.asarray(batch["image"], np.float32) / 255 - 0.5) / 0.25
    expected = model.apply(state.variables, x, train=False)
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)


# ---- 1 device vs 8 devices

MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from softlabel_ood import models, train_step as ts

    assert len(jax.devices()) == 8, jax.devices()
    rng = np.random.default_rng(0)
    host_batch = {
        "image": rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8),
        "label": rng.integers(0, 4, 16).astype(np.int32),
        "outlier_image": rng.integers(0, 256, (8, 8, 8, 1), dtype=np.uint8),
    }
    meshes = {
        "1 device": ts.data_mesh(jax.devices()[:1]),
        "8 devices": ts.data_mesh(),
        "8 devices, auto axes": jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,)),
    }
    results = {}
    for name, mesh in meshes.items():
        # OE with dropout and augmentation: every source of randomness and the ID/outlier
        # concatenation are exercised.
        model = models.SmallCNN(num_classes=4, channels=(8, 16), dropout_rate=0.3)
        tx = ts.make_optimizer(learning_rate=0.1, weight_decay=5e-4, total_steps=10)
        state = ts.create_train_state(model, tx, image_shape=(8, 8, 1), seed=0, mesh=mesh)
        config = ts.StepConfig(method="oe", num_classes=4, seed=0, mean=(0.5,), std=(0.25,))
        step = ts.make_train_step(model, config, mesh)
        batch = jax.device_put(host_batch, NamedSharding(mesh, P("data")))
        for _ in range(2):
            state, metrics = step(state, batch, None)
        assert len(state.params["Conv_0"]["kernel"].sharding.device_set) == mesh.size
        results[name] = jax.tree.map(np.asarray, (state.params, state.batch_stats, metrics))
    reference = jax.tree.leaves(results.pop("1 device"))
    for name, result in results.items():
        diff = max(float(np.max(np.abs(a - b)))
                   for a, b in zip(reference, jax.tree.leaves(result), strict=True))
        assert diff < 1e-5, (name, diff)
        print(name, "max abs difference", diff)
    print("SAME")
""")


def test_one_step_on_eight_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SAME" in result.stdout
