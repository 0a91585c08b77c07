"""Train state, hyperparameters and the pure train/eval steps, compiled once over a `data` mesh.

The step is one `jax.jit` with explicit shardings at its boundary: the batch is split over the
mesh's "data" axis, the state is replicated and donated. The compiler inserts the gradient and
BatchNorm all-reduces, so BatchNorm sees the global batch and the same code gives the same
numbers on 1 device and on N devices. Randomness is derived from (seed, step), never carried.

What is compiled in and what is not. `StepConfig` holds what changes the program (method, model
shapes, normalisation, optimizer kind); `Hyperparams` holds the values that the runs of a grid
vary (seed, learning rate, α, KD temperature and weight, OE weight) and is an argument of the
compiled function. So every run of a grid with the same `StepConfig` and shapes runs one
executable, and the builders below are memoised: a process that trains many runs traces and
compiles each program once.

`make_train_steps` compiles up to `steps_per_call` steps into one call (a `fori_loop` over the
step with a runtime trip count), taking each step's batch from arrays already on the devices,
so that the host neither sends images nor waits between steps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood import methods
from softlabel_ood.data import augment
from softlabel_ood.training import method_losses, optimizer

DATA_AXIS = "data"
RUNS_AXIS = "runs"  # the leading axis of a population's stacked states (`make_population_steps`)
METRICS = ("loss", "accuracy", "learning_rate")
# Compiled programs kept per process: a grid needs a handful (one per method and model).
PROGRAM_CACHE_SIZE = 32


class TrainState(struct.PyTreeNode):
    """Arrays only: the model and the optimizer are part of the compiled step, not the state."""

    step: jax.Array  # int32 scalar: the number of updates applied so far
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        """What `model.apply` and the eval step take."""
        return {"params": self.params, "batch_stats": self.batch_stats}


class Hyperparams(struct.PyTreeNode):
    """Per-run values that are arguments of the compiled step, not constants inside it."""

    seed: jax.Array  # int32: dropout and augmentation keys are fold_in(key(seed), step)
    learning_rate: jax.Array  # float32: the peak of the OE cosine schedule
    total_steps: jax.Array  # int32: the schedule's length
    label_smoothing: jax.Array  # float32: α of ls, the incorrect-class mass of kd_incorrect
    kd_temperature: jax.Array  # float32
    kd_weight: jax.Array  # float32
    oe_weight: jax.Array  # float32

    @classmethod
    def create(cls, *, seed: int, learning_rate: float, total_steps: int,
               label_smoothing: float = 0.0, kd_temperature: float = 1.0, kd_weight: float = 0.0,
               oe_weight: float = 0.5) -> Hyperparams:
        # Fixed dtypes, so that every run presents the same argument types to the compiled step.
        return cls(seed=np.int32(seed), learning_rate=np.float32(learning_rate),
                   total_steps=np.int32(total_steps), label_smoothing=np.float32(label_smoothing),
                   kd_temperature=np.float32(kd_temperature), kd_weight=np.float32(kd_weight),
                   oe_weight=np.float32(oe_weight))


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything static that the step needs; run_model.py builds it from the config."""

    method: str  # ce | ls | oe | kd | kd_incorrect
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = True
    compute_dtype: str = "float32"  # dtype of the normalized images fed to the model
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True

    def __post_init__(self):
        if self.method not in methods.METHODS:
            raise ValueError(f"method {self.method!r}: expected one of {methods.METHODS}")
        if self.optimizer not in optimizer.OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: expected one of "
                             f"{optimizer.OPTIMIZERS}")

    def make_optimizer(self) -> optax.GradientTransformation:
        return optimizer.make_optimizer(weight_decay=self.weight_decay, momentum=self.momentum,
                                        nesterov=self.nesterov, optimizer=self.optimizer)


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh of a run trained alone: every device on the "data" axis (runs axis of size 1)."""
    return population_mesh(1, devices)


def population_mesh(run_devices: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 2-D mesh ("runs", "data") over `devices` (default: all devices).

    A population's stacked runs are split over "runs" and each run's batch over "data", so
    `run_devices` = 1 is pure data parallelism and `run_devices` = the device count gives each
    device whole runs. Every row of the mesh (the devices of one group of runs) takes an equal
    share of every process's devices, in `jax.make_mesh`'s order, so the "data" axis spans the
    processes as the input pipeline needs (each process feeds its contiguous rows of a batch).
    Both axes are Auto: the compiler propagates shardings inside the step, as data parallelism
    needs (see `_auto_sharded` for meshes with Explicit axes).
    """
    devices = list(jax.devices() if devices is None else devices)
    auto = jax.sharding.AxisType.Auto
    ordered = np.asarray(jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(auto,),
                                       devices=devices).devices)
    processes = len({d.process_index for d in devices})
    local = len(devices) // processes
    if run_devices < 1 or local % run_devices:
        raise ValueError(f"run_devices={run_devices} must divide the {local} devices of each "
                         f"process")
    grid = ordered.reshape(processes, run_devices, local // run_devices).transpose(1, 0, 2)
    return Mesh(grid.reshape(run_devices, -1), (RUNS_AXIS, DATA_AXIS), axis_types=(auto, auto))


# --------------------------------------------------------------------------------------------
# State


def create_train_state(model: nn.Module, config: StepConfig, *, image_shape: Sequence[int],
                       seed: int, mesh: Mesh) -> TrainState:
    """Initial state, a function of `seed` alone, placed replicated on `mesh`."""
    return _init_program(model, config, tuple(image_shape), mesh)(np.int32(seed))


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def _init_program(model: nn.Module, config: StepConfig, image_shape: tuple[int, ...],
                  mesh: Mesh) -> Callable:
    tx = config.make_optimizer()

    def init(seed):
        params_key, dropout_key = jax.random.split(jax.random.key(seed))
        variables = model.init({"params": params_key, "dropout": dropout_key},
                               jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

    # Initialising under jit writes every replica in place instead of copying from one device.
    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


# --------------------------------------------------------------------------------------------
# Steps


def _auto_sharded(fn: Callable, mesh: Mesh, out_shardings) -> Callable:
    """Runs `fn` with compiler-propagated shardings, whatever the mesh's axis types.

    `jax.make_mesh` makes Explicit axes by default, and arrays placed on such a mesh carry their
    sharding in their type. The step bodies mix batch-sharded activations with replicated values
    of the same batch size (per-example crop offsets, dropout masks), which explicit sharding
    rejects; under auto axes the compiler partitions them along the batch as it would anyway.
    """
    if not mesh.explicit_axes:
        return fn
    return jax.sharding.auto_axes(fn, out_sharding=out_shardings)


def _prepare_images(images: jax.Array, key: jax.Array, config: StepConfig) -> jax.Array:
    if config.augment:
        images = augment.random_crop_flip(key, images)
    return augment.normalize(images, config.mean, config.std, dtype=jnp.dtype(config.compute_dtype))


def _train_step_fn(model: nn.Module, config: StepConfig,
                   teacher_model: nn.Module | None) -> Callable:
    """The pure, unjitted step: (state, hparams, batch, teacher_variables) -> (state, metrics)."""
    method = methods.BY_NAME[config.method]
    if method.needs_teacher and teacher_model is None:
        raise ValueError(f"method {config.method!r} needs a teacher_model")
    loss_of_batch = method_losses.LOSSES[config.method]
    tx = config.make_optimizer()

    def train_step(state: TrainState, hp: Hyperparams, batch, teacher_variables):
        key = jax.random.fold_in(jax.random.key(hp.seed), state.step)
        dropout_key, augment_key = jax.random.split(key)
        labels = batch["label"]
        num_id = labels.shape[0]
        images = batch["image"]
        if method.needs_outliers:
            # One forward pass over ID and outlier images together, as the OE reference does
            # (torch.cat((in_set[0], out_set[0]))): BatchNorm normalises both with one set of
            # batch statistics, and its running averages include the outliers.
            images = jnp.concatenate([images, batch["outlier_image"]])
        x = _prepare_images(images, augment_key, config)

        teacher_logits = None
        if method.needs_teacher:
            # Same augmented batch as the student, inference mode, no gradient into the teacher.
            teacher_logits = jax.lax.stop_gradient(
                teacher_model.apply(teacher_variables, x, train=False))

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, x, train=True,
                mutable=["batch_stats"], rngs={"dropout": dropout_key})
            id_logits, outlier_logits = logits[:num_id], logits[num_id:]
            loss = loss_of_batch(hp, id_logits, labels,
                                 outlier_logits if method.needs_outliers else None, teacher_logits)
            return loss, (id_logits, updates["batch_stats"])

        (loss, (id_logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        rate = optimizer.oe_cosine_learning_rate(state.step, hp.learning_rate, hp.total_steps)
        opt_state = optimizer.with_learning_rate(state.opt_state, rate)
        updates, opt_state = tx.update(grads, opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1, params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats, opt_state=opt_state)
        metrics = {
            "loss": loss.astype(jnp.float32),
            "accuracy": jnp.mean((jnp.argmax(id_logits, -1) == labels).astype(jnp.float32)),
            "learning_rate": optimizer.learning_rate(opt_state),
        }
        return new_state, metrics

    return train_step


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def make_train_step(model: nn.Module, step_config: StepConfig, mesh: Mesh, *,
                    teacher_model: nn.Module | None = None) -> Callable:
    """Returns jitted `step(state, hparams, batch, teacher_variables) -> (state, metrics)`.

    batch: {"image": uint8 [B, H, W, C], "label": int32 [B]} sharded over "data", plus
    "outlier_image" uint8 [B_oe, H, W, C] for oe. teacher_variables: the teacher's
    {"params", "batch_stats"} for kd and kd_incorrect, else None; place them on the mesh once
    (`jax.device_put(v, NamedSharding(mesh, P()))`), since host arrays would be copied to the
    devices at every step. metrics: float32 scalars loss, accuracy (ID rows only) and
    learning_rate (the rate this update used). The state argument is donated: do not use it
    after the call. One step per call; the train command runs `make_train_steps`.
    """
    replicated = NamedSharding(mesh, P())
    batch_sharded = NamedSharding(mesh, P(DATA_AXIS))
    out_shardings = (replicated, replicated)
    return jax.jit(
        _auto_sharded(_train_step_fn(model, step_config, teacher_model), mesh, out_shardings),
        in_shardings=(replicated, replicated, batch_sharded, replicated),
        out_shardings=out_shardings,
        donate_argnums=0,
    )


def _resident_batch(row, data, feed):
    """Step `row`'s batch gathered on the devices from the resident training set: feed["index"]
    is int32 [rows, B], or [runs, rows, B] for a population (each run its own rows)."""
    rows = feed["index"][..., row, :]
    batch = {"image": data["image"][rows], "label": data["label"][rows]}
    if "outlier_index" in feed:
        batch["outlier_image"] = data["outlier_image"][feed["outlier_index"][..., row, :]]
    return batch


def _calls_of_steps(step: Callable, batch_at: Callable, batch_sharded: NamedSharding,
                    runs_shape: tuple[int, ...], steps_per_call: int) -> Callable:
    """`run(state, hp, teacher_variables, data, feed, first, num_steps)`: `num_steps` calls of
    `step` on the batches `batch_at(first + i, data, feed)`, with each step's metrics written to
    position i of float32 arrays [*runs_shape, steps_per_call] (NaN past num_steps)."""

    def run(state, hp, teacher_variables, data, feed, first, num_steps):
        def body(i, carry):
            state, metrics = carry
            batch = jax.lax.with_sharding_constraint(batch_at(first + i, data, feed),
                                                     batch_sharded)
            state, step_metrics = step(state, hp, batch, teacher_variables)
            metrics = {name: metrics[name].at[..., i].set(step_metrics[name]) for name in METRICS}
            return state, metrics

        empty = {name: jnp.full((*runs_shape, steps_per_call), jnp.nan, jnp.float32)
                 for name in METRICS}
        if steps_per_call == 1:
            # No loop at all: XLA's CPU backend runs convolution gradients inside a while loop
            # 5-30x slower than outside one (measured in benchmarks/train_loop.py), so one step
            # per call is the fast choice there; num_steps is then always 1.
            return body(0, (state, empty))
        return jax.lax.fori_loop(0, num_steps, body, (state, empty))

    return run


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def make_train_steps(model: nn.Module, step_config: StepConfig, mesh: Mesh, *,
                     steps_per_call: int, resident: bool,
                     teacher_model: nn.Module | None = None) -> Callable:
    """Returns jitted `run(state, hparams, teacher_variables, data, feed, first, num_steps)`.

    Runs `num_steps` (a runtime value, 0 < num_steps <= steps_per_call) train steps in one call
    and returns (state, metrics), metrics float32 [steps_per_call] per name of `METRICS`, of
    which the first num_steps entries are the steps' (the rest NaN). Step i uses row first + i
    of the feed arrays (first is a runtime value too):
      resident=True:  data["image"][feed["index"][first + i]] and data["label"][...], with data
                      the whole training set replicated on every device (and "outlier_image"
                      with feed["outlier_index"] for oe); feed holds int32 [rows, B] index
                      tables, e.g. a whole epoch's;
      resident=False: feed["image"][first + i], feed["label"][...] (and feed["outlier_image"]),
                      batches gathered on the host; data is {}.
    feed is sharded over "data" along its batch axis (axis 1). With steps_per_call > 1 the body
    is one compiled step whatever first and num_steps are, so how a run's steps are cut into
    calls never changes its bits. The state argument is donated.
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    step = _train_step_fn(model, step_config, teacher_model)
    replicated = NamedSharding(mesh, P())
    batch_sharded = NamedSharding(mesh, P(DATA_AXIS))
    feed_sharded = NamedSharding(mesh, P(None, DATA_AXIS))

    def host_batch(row, data, feed):
        del data  # the batches came with the feed
        return jax.tree.map(lambda x: x[row], feed)

    batch_at = _resident_batch if resident else host_batch
    run = _calls_of_steps(step, batch_at, batch_sharded, (), steps_per_call)
    out_shardings = (replicated, replicated)
    return jax.jit(
        _auto_sharded(run, mesh, out_shardings),
        in_shardings=(replicated, replicated, replicated, replicated, feed_sharded, replicated,
                      replicated),
        out_shardings=out_shardings,
        donate_argnums=0,
    )


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def make_population_steps(model: nn.Module, step_config: StepConfig, mesh: Mesh, *,
                          steps_per_call: int, population: int,
                          teacher_model: nn.Module | None = None) -> Callable:
    """`make_train_steps(resident=True)` for `population` runs trained together in one program.

    Returns jitted `run(states, hparams, teacher_variables, data, feed, first, num_steps)`:
    states, hparams and teacher_variables are those of single runs stacked on a leading run
    axis (`stack`), split over the mesh's "runs" axis; data is the training set replicated on
    every device, shared by all runs; feed["index"] (and feed["outlier_index"]) are int32
    [population, rows, B], each run's own index table (its own seed's permutations), split over
    "runs" and, along the batch, over "data". The step is `jax.vmap`ped over the run axis, so
    every run keeps its own BatchNorm statistics, dropout and augmentation keys (from its seed)
    and teacher. Returns (states, metrics), metrics float32 [population, steps_per_call] per
    name of `METRICS`, NaN past num_steps. The states argument is donated.

    A run trained alone takes `make_train_steps`; a population agrees with its runs trained
    alone up to floating-point reassociation (batched convolutions may sum in another order).
    """
    if steps_per_call < 1 or population < 2:
        raise ValueError(f"need steps_per_call >= 1 and population >= 2, got {steps_per_call}, "
                         f"{population}")
    step = jax.vmap(_train_step_fn(model, step_config, teacher_model))
    stacked = NamedSharding(mesh, P(RUNS_AXIS))
    replicated = NamedSharding(mesh, P())
    batch_sharded = NamedSharding(mesh, P(RUNS_AXIS, DATA_AXIS))
    feed_sharded = NamedSharding(mesh, P(RUNS_AXIS, None, DATA_AXIS))

    run = _calls_of_steps(step, _resident_batch, batch_sharded, (population,), steps_per_call)
    out_shardings = (stacked, replicated)
    return jax.jit(
        _auto_sharded(run, mesh, out_shardings),
        in_shardings=(stacked, stacked, stacked, replicated, feed_sharded, replicated,
                      replicated),
        out_shardings=out_shardings,
        donate_argnums=0,
    )


def stack(trees: Sequence[Any], mesh: Mesh) -> Any:
    """Single runs' pytrees (states, hyperparameters, teachers) stacked on a leading run axis,
    split over the mesh's "runs" axis."""
    return _stack_program(mesh)(*trees)


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def _stack_program(mesh: Mesh) -> Callable:
    return jax.jit(lambda *trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees),
                   out_shardings=NamedSharding(mesh, P(RUNS_AXIS)))


def member(tree: Any, index: int, mesh: Mesh) -> Any:
    """Run `index` of a stacked pytree, replicated on the mesh (as a run trained alone holds it)."""
    return _member_program(mesh)(tree, np.int32(index))


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def _member_program(mesh: Mesh) -> Callable:
    return jax.jit(lambda tree, i: jax.tree.map(lambda x: x[i], tree),
                   out_shardings=NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def make_population_eval_step(model: nn.Module, step_config: StepConfig, mesh: Mesh) -> Callable:
    """`make_eval_step` for stacked variables: `eval(variables, batch)` gives {"logits":
    [population, B, K]} (features are not computed); every run sees the same batch."""
    single = _eval_fn(model, step_config)

    def evaluate(variables, batch):
        return {"logits": jax.vmap(lambda v: single(v, batch)["logits"])(variables)}

    out = NamedSharding(mesh, P(RUNS_AXIS, DATA_AXIS))
    return jax.jit(
        _auto_sharded(evaluate, mesh, out),
        in_shardings=(NamedSharding(mesh, P(RUNS_AXIS)), NamedSharding(mesh, P(DATA_AXIS))),
        out_shardings=out,
    )


def _eval_fn(model: nn.Module, step_config: StepConfig) -> Callable:
    dtype = jnp.dtype(step_config.compute_dtype)

    def eval_step(variables, batch):
        x = augment.normalize(batch["image"], step_config.mean, step_config.std, dtype=dtype)
        logits, features = model.apply(variables, x, train=False, return_features=True)
        return {"logits": logits.astype(jnp.float32), "features": features.astype(jnp.float32)}

    return eval_step


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def make_eval_step(model: nn.Module, step_config: StepConfig, mesh: Mesh) -> Callable:
    """Returns jitted `eval_step(variables, batch) -> {"logits": [B, K], "features": [B, D]}`.

    Inference mode (BatchNorm running statistics, no dropout), no augmentation; outputs float32,
    sharded over "data" like the batch. Padded rows are computed like any other: the caller's
    mask keeps them out of every metric.
    """
    replicated = NamedSharding(mesh, P())
    batch_sharded = NamedSharding(mesh, P(DATA_AXIS))
    return jax.jit(
        _auto_sharded(_eval_fn(model, step_config), mesh, batch_sharded),
        in_shardings=(replicated, batch_sharded),
        out_shardings=batch_sharded,
    )
