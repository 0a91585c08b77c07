"""Train state, hyperparameters, the pure train step, and the one program that runs it.

`make_train_program` compiles up to `steps_per_call` steps of R runs into one call: a
`fori_loop` over steps (none for one step per call), each step computing every run a device
holds (`runs_axis`: runs over devices first, each run's batch over "data"). A run trained alone
is the program with R = 1. The state is donated; randomness is derived from (seed, step), never
carried.

What is compiled in and what is not. `StepConfig` holds what changes the program (the method's
loss and batch transform, model shapes, normalisation, optimizer kind); `Hyperparams` holds the
values that the runs of a grid vary (seed, learning rate, every method's hyperparameters) and is
an argument of the compiled function. So every run of a grid with the same `StepConfig` and
shapes runs one executable, and the builders are memoised: a process that trains many runs
traces and compiles each program once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
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
from softlabel_ood.training import batch_transforms, method_losses, optimizer
from softlabel_ood.training.runs_axis import (
    DATA_AXIS,
    PROGRAM_CACHE_SIZE,
    RUNS_AXIS,
    over_runs,
    runs_per_device_group,
    stack_in_program,
    take,
)

METRICS = ("loss", "accuracy", "learning_rate")
# Folded into a step's key for its batch transform's key (`_transformed`).
TRANSFORM_STREAM = 1


class TrainState(struct.PyTreeNode):
    """Arrays only: the model and the optimizer are part of the compiled step, not the state."""

    step: jax.Array  # int32 scalar: the number of updates applied so far
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        """What `model.apply` and the eval program take."""
        return {"params": self.params, "batch_stats": self.batch_stats}


class Hyperparams(struct.PyTreeNode):
    """Per-run values that are arguments of the compiled step, not constants inside it."""

    seed: jax.Array  # int32: dropout, augmentation and batch-transform keys derive from it
    learning_rate: jax.Array  # float32: the peak of the OE cosine schedule
    total_steps: jax.Array  # int32: the schedule's length
    # float32 per hyperparameter of every registered method (`methods.hyperparameters()`), by
    # config field; a method's loss reads its own, the others hold their neutral values. One
    # structure for all methods, so that any runs sharing a loss can be stacked.
    method_values: dict[str, jax.Array]

    @classmethod
    def create(cls, *, seed: int, learning_rate: float, total_steps: int,
               method_values: Mapping[str, float] | None = None) -> Hyperparams:
        """`method_values` by config field; a field it lacks takes its neutral value."""
        given = dict(method_values or {})
        records = methods.hyperparameters()
        if unknown := set(given) - set(records):
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}; expected fields of "
                             f"{sorted(records)}")
        # Fixed dtypes, so that every run presents the same argument types to the compiled step.
        values = {field: np.float32(given.get(field, h.neutral)) for field, h in records.items()}
        return cls(seed=np.int32(seed), learning_rate=np.float32(learning_rate),
                   total_steps=np.int32(total_steps), method_values=values)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything static that the step needs; run_model.py builds it from the config."""

    loss: str  # a name of method_losses.LOSSES (a method's record names its loss)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_teacher: bool = False
    needs_outliers: bool = False
    augment: bool = True
    compute_dtype: str = "float32"  # dtype of the normalized images fed to the model
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True
    transform: str = ""  # a name of batch_transforms.TRANSFORMS, or "" for none

    @classmethod
    def for_method(cls, method: str, **fields) -> StepConfig:
        record = methods.get(method)
        return cls(loss=record.loss, transform=record.transform,
                   needs_teacher=record.needs_teacher, needs_outliers=record.needs_outliers,
                   **fields)

    def __post_init__(self):
        if self.loss not in method_losses.LOSSES:
            raise ValueError(f"loss {self.loss!r}: expected one of {sorted(method_losses.LOSSES)}")
        if self.transform and self.transform not in batch_transforms.TRANSFORMS:
            raise ValueError(f"transform {self.transform!r}: expected one of "
                             f"{sorted(batch_transforms.TRANSFORMS)}")
        if self.optimizer not in optimizer.OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: expected one of "
                             f"{optimizer.OPTIMIZERS}")

    @property
    def optimizer_fields(self) -> dict:
        return {"optimizer": self.optimizer, "weight_decay": self.weight_decay,
                "momentum": self.momentum, "nesterov": self.nesterov}

    def make_optimizer(self) -> optax.GradientTransformation:
        return optimizer.make_optimizer(**self.optimizer_fields)


def create_train_state(model: nn.Module, config: StepConfig, *, image_shape: Sequence[int],
                       seed: int, mesh: Mesh) -> TrainState:
    """Initial state, a function of `seed` alone, placed replicated on `mesh`."""
    # Keyed by the optimizer, not the whole StepConfig: every loss of a grid shares one program.
    optimizer_fields = tuple(sorted(config.optimizer_fields.items()))
    return _init_program(model, optimizer_fields, tuple(image_shape), mesh)(np.int32(seed))


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def _init_program(model: nn.Module, optimizer_fields: tuple, image_shape: tuple[int, ...],
                  mesh: Mesh) -> Callable:
    tx = optimizer.make_optimizer(**dict(optimizer_fields))

    def init(seed):
        params_key, dropout_key = jax.random.split(jax.random.key(seed))
        variables = model.init({"params": params_key, "dropout": dropout_key},
                               jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

    # Initialising under jit writes every replica in place instead of copying from one device.
    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def prepare_images(images: jax.Array, key: jax.Array | None, config: StepConfig) -> jax.Array:
    """Augmented (with a key, when the dataset augments) and normalised images."""
    if key is not None and config.augment:
        images = augment.random_crop_flip(key, images)
    return augment.normalize(images, config.mean, config.std, dtype=jnp.dtype(config.compute_dtype))


def _transformed(config: StepConfig, key: jax.Array, hp: Hyperparams, x: jax.Array,
                 labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The ID rows of `x` (outliers follow them) and their targets after the method's batch
    transform; one-hot targets and `x` itself without one."""
    targets = jax.nn.one_hot(labels, config.num_classes, dtype=jnp.float32)
    if not config.transform:
        return x, targets
    num_id = labels.shape[0]
    # Its own stream, folded in rather than split off the step's key: the dropout and
    # augmentation keys of every method stay those of a method without a transform.
    transform_key = jax.random.fold_in(key, TRANSFORM_STREAM)
    images, targets = batch_transforms.TRANSFORMS[config.transform](
        transform_key, hp, x[:num_id], targets)
    return jnp.concatenate([images.astype(x.dtype), x[num_id:]]), targets


def train_step_fn(model: nn.Module, config: StepConfig,
                  teacher_model: nn.Module | None) -> Callable:
    """One run's pure step: (state, hparams, batch, teacher_variables) -> (state, metrics).

    batch: {"image": uint8 [B, H, W, C], "label": int32 [B]}, plus "outlier_image" uint8
    [B_oe, H, W, C] for methods that read outliers. metrics: float32 scalars loss, accuracy (ID
    rows only) and learning_rate (the rate this update used).
    """
    if config.needs_teacher and teacher_model is None:
        raise ValueError(f"loss {config.loss!r} needs a teacher_model")
    loss_of_batch = method_losses.LOSSES[config.loss]
    tx = config.make_optimizer()

    def train_step(state: TrainState, hp: Hyperparams, batch, teacher_variables):
        key = jax.random.fold_in(jax.random.key(hp.seed), state.step)
        dropout_key, augment_key = jax.random.split(key)
        labels = batch["label"]
        num_id = labels.shape[0]
        images = batch["image"]
        if config.needs_outliers:
            # One forward pass over ID and outlier images together, as the OE reference does
            # (torch.cat((in_set[0], out_set[0]))): BatchNorm normalises both with one set of
            # batch statistics, and its running averages include the outliers.
            images = jnp.concatenate([images, batch["outlier_image"]])
        x, targets = _transformed(config, key, hp, prepare_images(images, augment_key, config),
                                  labels)

        teacher_logits = None
        if config.needs_teacher:
            # Same augmented batch as the student, inference mode, no gradient into the teacher.
            teacher_logits = jax.lax.stop_gradient(
                teacher_model.apply(teacher_variables, x, train=False))

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, x, train=True,
                mutable=["batch_stats"], rngs={"dropout": dropout_key})
            id_logits, outlier_logits = logits[:num_id], logits[num_id:]
            inputs = method_losses.LossInputs(
                labels, targets, outlier_logits if config.needs_outliers else None,
                teacher_logits)
            loss = loss_of_batch(hp, id_logits, inputs)
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


def _batch_at(row, data: dict, feed: dict) -> dict:
    """One run's batch for feed row `row`: gathered on the device from the resident training set
    (feed "index"/"outlier_index": int32 [rows, B]), or the feed's own batches (feed "image",
    "label", "outlier_image": [rows, B, ...], host-fed; data is {} then)."""
    if "index" not in feed:
        return jax.tree.map(lambda x: x[row], feed)
    rows = feed["index"][row]
    batch = {"image": data["image"][rows], "label": data["label"][rows]}
    if "outlier_index" in feed:
        batch["outlier_image"] = data["outlier_image"][feed["outlier_index"][row]]
    return batch


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def make_train_program(model: nn.Module, step_config: StepConfig, mesh: Mesh, *, runs: int,
                       steps_per_call: int, teacher_model: nn.Module | None = None) -> Callable:
    """Returns jitted `run(states, hparams, teacher_variables, data, feed, first, num_steps)`.

    Runs `num_steps` (a runtime value, 0 < num_steps <= steps_per_call) train steps of `runs`
    runs in one call and returns (states, metrics), metrics float32 [runs, steps_per_call] per
    name of `METRICS`, of which the first num_steps columns are the steps' (the rest NaN).
    states, hparams and teacher_variables (or None) are single runs' pytrees stacked on a
    leading run axis (`runs_axis.stack`); data is the resident training set replicated on every
    device (or {} when host-fed); feed holds each run's rows [runs, rows, B, ...]
    (`train_feed.TrainFeed`), split over "runs" and, along the batch, over "data". Step i of a
    run reads feed row first + i (first is a runtime value too). With steps_per_call > 1 the
    body is one compiled step whatever first and num_steps are, so how a run's steps are cut
    into calls never changes its bits. The states argument is donated.
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    local_runs = runs_per_device_group(mesh, runs)
    step = train_step_fn(model, step_config, teacher_model)

    def per_device(states, hparams, teachers, data, feed, first, num_steps):
        def body(i, carry):
            states, metrics = carry
            outs = []
            for r in range(local_runs):  # unrolled: each run's own step (runs_axis)
                batch = jax.lax.with_sharding_constraint(
                    _batch_at(first + i, data, take(feed, r)), P(DATA_AXIS))
                outs.append(step(take(states, r), take(hparams, r), batch,
                                 None if teachers is None else take(teachers, r)))
            states, step_metrics = (stack_in_program(part) for part in zip(*outs, strict=True))
            return states, {name: metrics[name].at[:, i].set(step_metrics[name])
                            for name in METRICS}

        empty = {name: jnp.full((local_runs, steps_per_call), jnp.nan, jnp.float32)
                 for name in METRICS}
        if steps_per_call == 1:
            # No loop at all: XLA's CPU backend runs convolution gradients inside a while loop
            # 5-30x slower than outside one (benchmarks/train_loop.py), so one step per call is
            # the fast choice there; num_steps is then always 1.
            return body(0, (states, empty))
        return jax.lax.fori_loop(0, num_steps, body, (states, empty))

    runs_spec, replicated = P(RUNS_AXIS), P()
    program = over_runs(per_device, mesh,
                        in_specs=(runs_spec, runs_spec, runs_spec, replicated, runs_spec,
                                  replicated, replicated),
                        out_specs=(runs_spec, runs_spec))

    def sharding(spec):
        return NamedSharding(mesh, spec)

    return jax.jit(
        program,
        in_shardings=(sharding(runs_spec), sharding(runs_spec), sharding(runs_spec),
                      sharding(replicated), sharding(P(RUNS_AXIS, None, DATA_AXIS)),
                      sharding(replicated), sharding(replicated)),
        out_shardings=(sharding(runs_spec), sharding(runs_spec)),
        donate_argnums=0,
    )
