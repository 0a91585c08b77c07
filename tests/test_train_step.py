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

from softlabel_ood import methods, models
from softlabel_ood.data.datasets import ArrayDataset
from softlabel_ood.training import evaluation, optimizer, runs_axis
from softlabel_ood.training import train_step as ts
from tests.train_helpers import one_step_program

NUM_CLASSES = 4
IMAGE_SHAPE = (8, 8, 1)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mesh():
    return runs_axis.data_mesh(jax.devices()[:1])


def tiny_model(**kwargs):
    return models.SmallCNN(num_classes=NUM_CLASSES, channels=(8, 16), **kwargs)


def step_config(method="ce", **kwargs):
    kwargs.setdefault("augment", False)
    return ts.StepConfig.for_method(method, num_classes=NUM_CLASSES, mean=(0.5,), std=(0.25,),
                                    **kwargs)


def hparams(learning_rate=0.3, total_steps=1000, seed=0, **method_values):
    """`method_values` by config field (`**{"oe.weight": 0.5}`)."""
    return ts.Hyperparams.create(seed=seed, learning_rate=learning_rate, total_steps=total_steps,
                                 method_values=method_values)


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
    return jax.device_put(batch, NamedSharding(mesh, P(runs_axis.DATA_AXIS)))


def make_state(mesh, model=None, seed=0, config=None):
    return ts.create_train_state(model or tiny_model(), config or step_config(),
                                 image_shape=IMAGE_SHAPE, seed=seed, mesh=mesh)


def copy_tree(tree):
    return jax.tree.map(np.asarray, tree)


# ---- optimizer


def oe_reference_lr(step, total, lr):
    """The OE code: lr * cosine_annealing(step, total, 1, 1e-6 / lr)."""
    lr_min = 1e-6 / lr
    return lr * (lr_min + (1 - lr_min) * 0.5 * (1 + np.cos(step / total * np.pi)))


def test_schedule_matches_the_oe_reference():
    schedule = optimizer.oe_cosine_schedule(0.1, 100)
    # The reference steps its scheduler before its optimizer: update k runs at lr_{k+1}.
    for k in (0, 1, 37, 50, 98, 99):
        np.testing.assert_allclose(schedule(k), oe_reference_lr(k + 1, 100, 0.1), rtol=1e-5,
                                   atol=1e-8)
    np.testing.assert_allclose(schedule(99), 1e-6, rtol=1e-4)
    np.testing.assert_allclose(schedule(500), 1e-6, rtol=1e-4)


def test_sgd_matches_torch_sgd_with_nesterov_and_weight_decay():
    lr, wd, mu, total = 0.1, 5e-4, 0.9, 10
    tx = optimizer.make_optimizer(weight_decay=wd)
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    state = tx.init(params)
    # torch.optim.SGD(nesterov=True, dampening=0), written out.
    theta, buf = np.array([1.0, -2.0, 0.5]), None
    for k in range(3):
        grad = np.array([0.3, -0.1, 0.2]) * (k + 1)
        state = optimizer.with_learning_rate(
            state, optimizer.oe_cosine_learning_rate(k, lr, total))
        updates, state = tx.update({"w": jnp.asarray(grad, jnp.float32)}, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        d = grad + wd * theta
        buf = d if buf is None else mu * buf + d
        theta = theta - oe_reference_lr(k + 1, total, lr) * (d + mu * buf)
    np.testing.assert_allclose(params["w"], theta, rtol=1e-5)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_other_optimizers(name):
    tx = optimizer.make_optimizer(weight_decay=1e-4, optimizer=name)
    params = {"w": jnp.ones(3)}
    state = optimizer.with_learning_rate(tx.init(params), 1e-3)
    updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    assert np.all(np.asarray(updates["w"]) < 0)
    assert float(optimizer.learning_rate(state)) == np.float32(1e-3)


def test_an_update_without_a_learning_rate_is_nan():
    tx = optimizer.make_optimizer(weight_decay=0.0)
    params = {"w": jnp.ones(3)}
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    assert np.isnan(np.asarray(updates["w"])).all()


def test_bad_optimizer_and_method_are_rejected():
    with pytest.raises(ValueError, match="rmsprop"):
        optimizer.make_optimizer(weight_decay=0.0, optimizer="rmsprop")
    with pytest.raises(ValueError, match="rmsprop"):
        step_config(optimizer="rmsprop")
    with pytest.raises(KeyError, match="no_such_method"):
        step_config("no_such_method")
    with pytest.raises(ValueError, match="no_such_loss"):
        ts.StepConfig(loss="no_such_loss", num_classes=2, mean=(0.5,), std=(0.25,))


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
        ("oe", {"oe.weight": 0.5}),
        ("kd", {"kd.temperature": 2.0, "kd.weight": 0.5}),
        ("kd_incorrect", {"kd.temperature": 2.0, "label_smoothing": 0.3}),
    ],
)
def test_every_method_lowers_the_loss(mesh, method, kwargs):
    config = step_config(method)
    hp = hparams(**kwargs)
    teacher, teacher_variables = None, None
    if methods.needs_teacher(method):
        teacher = tiny_model()
        teacher_variables = teacher.init(jax.random.key(7), jnp.zeros((1, *IMAGE_SHAPE)),
                                         train=False)
    step = one_step_program(tiny_model(), config, mesh, teacher_model=teacher)
    state = make_state(mesh)
    batch = learnable_batch(mesh, outliers=16 if method == "oe" else 0)
    teacher_before = copy_tree(teacher_variables)
    losses = []
    for _ in range(10):
        state, metrics = step(state, hp, batch, teacher_variables)
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
        ts.make_train_program(tiny_model(), step_config("kd"), mesh, runs=1, steps_per_call=1)


def counting_model(traces: list, **kwargs) -> nn.Module:
    """tiny_model(**kwargs) that appends to `traces` each time it is traced (not run)."""

    class CountingModel(nn.Module):
        @nn.compact
        def __call__(self, x, train, return_features=False):
            traces.append(1)
            return tiny_model(**kwargs)(x, train, return_features)

    return CountingModel()


def test_step_compiles_once_and_reports_metrics(mesh):
    traces = []
    model = counting_model(traces, dropout_rate=0.2)
    config = step_config("ce", augment=True)
    state = make_state(mesh, model=model, config=config)
    step = one_step_program(model, config, mesh)
    schedule = optimizer.oe_cosine_schedule(0.1, 4)
    params_before = copy_tree(state.params)
    stats_before = copy_tree(state.batch_stats)
    traced_after_first = None
    for k in range(3):
        state, metrics = step(state, hparams(0.1, 4), learnable_batch(mesh, seed=k), None)
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
    step = one_step_program(model, step_config("ls", compute_dtype="bfloat16"), mesh)
    state, metrics = step(state, hparams(label_smoothing=0.1), learnable_batch(mesh), None)
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert math.isfinite(float(metrics["loss"]))


# ---- eval step


def test_eval_step_uses_running_statistics(mesh):
    model = tiny_model()
    state = make_state(mesh, model=model)
    config = step_config("ce")
    state, _ = one_step_program(model, config, mesh)(state, hparams(), learnable_batch(mesh),
                                                     None)
    program = evaluation.make_eval_program(model, config, mesh, runs=1, batch_size=8)
    batch = jax.device_get(learnable_batch(mesh, seed=5, batch_size=8))
    split = evaluation.resident(ArrayDataset(batch["image"], batch["label"], "t", "test"), mesh, 8)
    out = program(runs_axis.stack([state.variables], mesh), split.images, np.int32(0))
    assert (out["logits"].shape, out["logits"].dtype) == ((1, 8, NUM_CLASSES), jnp.float32)
    assert (out["features"].shape, out["features"].dtype) == ((1, 8, 16), jnp.float32)
    x = (np.asarray(batch["image"], np.float32) / 255 - 0.5) / 0.25
    expected = model.apply(state.variables, x, train=False)
    np.testing.assert_allclose(out["logits"][0], expected, atol=1e-5)
    # A split that does not fill its last batch: padded rows are dropped from the outputs.
    split = evaluation.resident(ArrayDataset(batch["image"][:5], batch["label"][:5], "t", "test"),
                                mesh, 4)
    outputs = evaluation.outputs(evaluation.make_eval_program(model, config, mesh, runs=1,
                                                              batch_size=4),
                                 runs_axis.stack([state.variables], mesh), split)
    np.testing.assert_allclose(outputs["logits"][0], expected[:5], atol=1e-5)


# ---- 1 device vs 8 devices

MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from softlabel_ood import models
    from softlabel_ood.training import runs_axis
    from softlabel_ood.training import train_step as ts

    assert len(jax.devices()) == 8, jax.devices()
    rng = np.random.default_rng(0)
    host_batch = {
        "image": rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8),
        "label": rng.integers(0, 4, 16).astype(np.int32),
        "outlier_image": rng.integers(0, 256, (8, 8, 8, 1), dtype=np.uint8),
    }
    meshes = {
        "1 device": runs_axis.data_mesh(jax.devices()[:1]),
        "8 devices": runs_axis.data_mesh(),
        "8 devices, 2 x 4": runs_axis.population_mesh(2),
    }
    results = {}
    for name, mesh in meshes.items():
        # OE with dropout and augmentation: every source of randomness and the ID/outlier
        # concatenation are exercised.
        model = models.SmallCNN(num_classes=4, channels=(8, 16), dropout_rate=0.3)
        config = ts.StepConfig.for_method("oe", num_classes=4, mean=(0.5,), std=(0.25,))
        # The same run twice on the 2 x 4 mesh: each group of 4 devices trains one whole run.
        runs = mesh.shape["runs"]
        state = ts.create_train_state(model, config, image_shape=(8, 8, 1), seed=0, mesh=mesh)
        hp = ts.Hyperparams.create(seed=0, learning_rate=0.1, total_steps=10,
                                   method_values={"oe.weight": 0.5})
        program = ts.make_train_program(model, config, mesh, runs=runs, steps_per_call=1)
        feed = jax.device_put({k: np.stack([v[None]] * runs) for k, v in host_batch.items()},
                              NamedSharding(mesh, P("runs", None, "data")))
        states = runs_axis.stack([state] * runs, mesh)
        hps = runs_axis.stack([hp] * runs, mesh)
        for _ in range(2):
            states, metrics = program(states, hps, None, {}, feed, np.int32(0), np.int32(1))
        assert len(states.params["Conv_0"]["kernel"].sharding.device_set) == mesh.size
        for r in range(runs):
            state = runs_axis.member(states, r, mesh)
            results[(name, r)] = jax.tree.map(np.asarray, (
                state.params, state.batch_stats, {k: v[r] for k, v in metrics.items()}))
    reference = jax.tree.leaves(results.pop(("1 device", 0)))
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


# ---- many steps per call, one program per grid


def _resident(mesh, n=64, seed=0):
    data = dict(learnable_batch(mesh, seed=seed, batch_size=n))
    return jax.device_put(data, NamedSharding(mesh, P()))


def _indices(mesh, steps, batch_size=16, n=64, seed=0):
    """Rows [steps, B] of one run, and the same as its feed table [1, steps, B] on the mesh."""
    rows = np.random.default_rng(seed).integers(0, n, (steps, batch_size)).astype(np.int32)
    return rows, _feed(mesh, rows)


def _feed(mesh, array):
    return jax.device_put(array[None], NamedSharding(
        mesh, P(runs_axis.RUNS_AXIS, None, runs_axis.DATA_AXIS)))


def one_run_program(model, config, mesh, steps_per_call):
    """`run(state, hp, data, feed, first, num_steps) -> (state, metrics [steps_per_call])`: the
    train program with R = 1, the run unstacked around it."""
    program = ts.make_train_program(model, config, mesh, runs=1, steps_per_call=steps_per_call)

    def run(state, hp, data, feed, first, num_steps):
        states, metrics = program(runs_axis.stack([state], mesh), runs_axis.stack([hp], mesh),
                                  None, data, feed, np.int32(first), np.int32(num_steps))
        return runs_axis.member(states, 0, mesh), {k: v[0] for k, v in metrics.items()}

    run.program = program
    return run


def test_calls_of_many_steps_equal_each_other_and_single_steps(mesh):
    """The cut into calls never changes a bit; one step per call agrees to rounding."""
    model, config = tiny_model(dropout_rate=0.2), step_config("ce", augment=True)
    data = _resident(mesh)
    rows, index = _indices(mesh, 6)
    hp = hparams(0.1, 6)

    def run(k, cuts):
        state = make_state(mesh, model=model, config=config)
        run_steps = one_run_program(model, config, mesh, k)
        losses, start = [], 0
        for n in cuts:
            # The whole index table goes with every call; `first` picks the call's rows.
            state, metrics = run_steps(state, hp, data, {"index": index}, start, n)
            assert np.isnan(np.asarray(metrics["loss"])[n:]).all()
            losses += np.asarray(metrics["loss"])[:n].tolist()
            start += n
        assert int(state.step) == 6
        return copy_tree(state), losses

    a, losses_a = run(6, [6])
    b, losses_b = run(4, [4, 2])
    c, losses_c = run(4, [1, 3, 2])
    assert losses_a == losses_b == losses_c
    for x, y, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c), strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    # One step per call compiles without a loop: the same math, equal up to rounding.
    d, losses_d = run(1, [1] * 6)
    np.testing.assert_allclose(losses_d, losses_a, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(d), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)

    # The same batches through the single-step program: another compilation of the same math.
    state = make_state(mesh, model=model, config=config)
    step = one_step_program(model, config, mesh)
    host = {k: np.asarray(v) for k, v in data.items()}
    single = []
    for i in range(6):
        batch = jax.device_put({k: v[rows[i]] for k, v in host.items()},
                               NamedSharding(mesh, P(runs_axis.DATA_AXIS)))
        state, metrics = step(state, hp, batch, None)
        single.append(float(metrics["loss"]))
    np.testing.assert_allclose(single, losses_a, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(copy_tree(state)), jax.tree.leaves(a), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_host_fed_calls_equal_device_resident_calls(mesh):
    model, config = tiny_model(), step_config("oe", augment=True)
    data = {**_resident(mesh), "outlier_image": _resident(mesh, seed=3)["image"]}
    rows, index = _indices(mesh, 3)
    outlier_rows, outlier_index = _indices(mesh, 3, batch_size=8, seed=1)
    hp = hparams(0.1, 3)
    run = one_run_program(model, config, mesh, 3)
    a, ma = run(make_state(mesh, model=model, config=config), hp, data,
                {"index": index, "outlier_index": outlier_index}, 0, 3)
    host = {k: np.asarray(v) for k, v in data.items()}
    feed = {"image": _feed(mesh, host["image"][rows]), "label": _feed(mesh, host["label"][rows]),
            "outlier_image": _feed(mesh, host["outlier_image"][outlier_rows])}
    b, mb = run(make_state(mesh, model=model, config=config), hp, {}, feed, 0, 3)
    # The same program body on the same images: gathered on the device or fed, the same bits.
    np.testing.assert_array_equal(ma["loss"], mb["loss"])
    for x, y in zip(jax.tree.leaves(copy_tree(a)), jax.tree.leaves(copy_tree(b)), strict=True):
        np.testing.assert_array_equal(x, y)


def test_runs_that_differ_in_hyperparameters_share_one_compiled_program(mesh):
    traces = []
    model_class = type(counting_model(traces))  # one class; each run makes its own instance

    data = _resident(mesh)
    _, index = _indices(mesh, 2)
    losses = {}
    grid = {"a": dict(seed=0, learning_rate=0.1, label_smoothing=0.1),
            "b": dict(seed=1, learning_rate=0.1, label_smoothing=0.1),
            "c": dict(seed=0, learning_rate=0.3, label_smoothing=0.1),
            "d": dict(seed=0, learning_rate=0.1, label_smoothing=0.4, total_steps=7)}
    for name, values in grid.items():
        # Each run builds its model, config and program as the train command does.
        model, config = model_class(), step_config("ls", augment=True)
        state = make_state(mesh, model=model, seed=values["seed"], config=config)
        run_steps = one_run_program(model, config, mesh, 2)
        _, metrics = run_steps(state, hparams(**{"total_steps": 4, **values}), data,
                               {"index": index}, 0, 2)
        losses[name] = np.asarray(metrics["loss"]).tolist()
        if name == "a":
            traced_after_first = len(traces)
    # Traced (so compiled) by the first run only, and every value took effect.
    assert len(traces) == traced_after_first
    assert run_steps.program._cache_size() == 1
    assert len({tuple(v) for v in losses.values()}) == len(grid)


def test_learning_rate_and_total_steps_are_runtime_values(mesh):
    model, config = tiny_model(), step_config("ce")
    step = one_step_program(model, config, mesh)
    for lr, total in ((0.1, 4), (0.02, 50)):
        state = make_state(mesh, model=model, config=config)
        rates = []
        for k in range(3):
            state, metrics = step(state, hparams(lr, total), learnable_batch(mesh, seed=k), None)
            rates.append(float(metrics["learning_rate"]))
        np.testing.assert_allclose(rates, [oe_reference_lr(k + 1, total, lr) for k in range(3)],
                                   rtol=1e-5)
