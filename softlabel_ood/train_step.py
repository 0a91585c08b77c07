"""Train state, optimizer and the pure train/eval steps, compiled once over a `data` mesh.

The step is one `jax.jit` with explicit shardings at its boundary: the batch is split over the
mesh's "data" axis, the state is replicated and donated. The compiler inserts the gradient and
BatchNorm all-reduces, so BatchNorm sees the global batch and the same code gives the same
numbers on 1 device and on N devices. Randomness is derived from (seed, step), never carried.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood import augment, soft_labels

DATA_AXIS = "data"
METHODS = ("ce", "ls", "oe", "kd", "kd_incorrect")
TEACHER_METHODS = ("kd", "kd_incorrect")
OPTIMIZERS = ("sgd", "adam", "adamw")
# The OE reference anneals to an absolute learning rate of 1e-6 (lr_min = 1e-6 / lr as a factor).
FINAL_LEARNING_RATE = 1e-6


class TrainState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: the number of updates applied so far
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @property
    def variables(self) -> dict[str, Any]:
        """What `model.apply` and the eval step take."""
        return {"params": self.params, "batch_stats": self.batch_stats}


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything static that the step needs; train.py builds it from the config."""

    method: str  # ce | ls | oe | kd | kd_incorrect
    num_classes: int
    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = True
    label_smoothing: float = 0.0  # alpha for ls, and for kd_incorrect
    kd_temperature: float = 1.0
    kd_weight: float = 0.0
    oe_weight: float = 0.5
    compute_dtype: str = "float32"  # dtype of the normalized images fed to the model

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: expected one of {METHODS}")


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named "data" over `devices` (default: all devices).

    The axis is Auto: the compiler propagates shardings inside the step, as pure data
    parallelism needs (see `_auto_sharded` for meshes with Explicit axes).
    """
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


# --------------------------------------------------------------------------------------------
# Optimizer


def oe_cosine_schedule(learning_rate: float, total_steps: int) -> optax.Schedule:
    """The OE reference's learning rate, as a function of optax's update count.

    The reference multiplies lr by `cosine_annealing(t, T, 1, 1e-6 / lr)`, i.e.
    lr_t = 1e-6 + (lr - 1e-6)·½(1 + cos(π t / T)), which is `optax.cosine_decay_schedule` with
    alpha = 1e-6 / lr. It calls `scheduler.step()` before `optimizer.step()`, so its k-th update
    (k = 0, 1, ...) uses lr_{k+1}: the first update is already slightly decayed and the last one
    runs at 1e-6. The shift by one below reproduces that exactly. Past T it stays at 1e-6.
    """
    if learning_rate <= 0 or total_steps <= 0:
        raise ValueError(f"need learning_rate > 0 and total_steps > 0, got {learning_rate}, "
                         f"{total_steps}")
    cosine = optax.cosine_decay_schedule(
        learning_rate, total_steps, alpha=FINAL_LEARNING_RATE / learning_rate)
    return lambda count: cosine(count + 1)


def make_optimizer(*, learning_rate: float, weight_decay: float, total_steps: int,
                   momentum: float = 0.9, nesterov: bool = True,
                   optimizer: str = "sgd") -> optax.GradientTransformation:
    """The OE reference optimizer (default) or Adam/AdamW, on the OE cosine schedule.

    sgd: torch.optim.SGD(lr, momentum, weight_decay, nesterov) exactly: the L2 term wd·θ is added
    to the gradient of every parameter (BatchNorm scales and biases included, as torch does)
    before the momentum buffer, and the update is -lr·(g + μ·buf) with buf = μ·buf + g.
    adam: the same L2-in-gradient decay in front of Adam (torch.optim.Adam's weight_decay).
    adamw: decoupled decay (torch.optim.AdamW / optax.adamw: θ -= lr·wd·θ).

    The learning rate is injected as a hyperparameter, so the optimizer state records the rate
    each update used; the train step reports it as a metric.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r}: expected one of {OPTIMIZERS}")

    def build(learning_rate):
        if optimizer == "adamw":
            return optax.adamw(learning_rate, weight_decay=weight_decay)
        if optimizer == "adam":
            step = optax.adam(learning_rate)
        else:
            step = optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
        # Order matters: the decay must reach the momentum buffer, as torch's weight_decay does.
        return optax.chain(optax.add_decayed_weights(weight_decay), step)

    return optax.inject_hyperparams(build)(
        learning_rate=oe_cosine_schedule(learning_rate, total_steps))


def _learning_rate(opt_state) -> jax.Array:
    """The rate `inject_hyperparams` recorded for the latest update (NaN for other optimizers)."""
    value = getattr(opt_state, "hyperparams", {}).get("learning_rate", jnp.nan)
    return jnp.asarray(value, jnp.float32)


# --------------------------------------------------------------------------------------------
# State


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, *,
                       image_shape: Sequence[int], seed: int, mesh: Mesh) -> TrainState:
    """Initial state, a function of `seed` alone, placed replicated on `mesh`."""
    replicated = NamedSharding(mesh, P())

    def init():
        params_key, dropout_key = jax.random.split(jax.random.key(seed))
        variables = model.init({"params": params_key, "dropout": dropout_key},
                               jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                          apply_fn=model.apply, tx=tx)

    # Initialising under jit writes every replica in place instead of copying from one device.
    return jax.jit(init, out_shardings=replicated)()


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


def _loss(config: StepConfig, logits: jax.Array, labels: jax.Array,
          outlier_logits: jax.Array | None, teacher_logits: jax.Array | None) -> jax.Array:
    """The batch-mean training loss of `config.method` (logits are the ID rows only)."""
    k = config.num_classes
    if config.method == "ce":
        return jnp.mean(soft_labels.cross_entropy(logits, soft_labels.one_hot(labels, k)))
    if config.method == "ls":
        targets = soft_labels.label_smoothing(labels, k, config.label_smoothing)
        return jnp.mean(soft_labels.cross_entropy(logits, targets))
    if config.method == "oe":
        hard = jnp.mean(soft_labels.cross_entropy(logits, soft_labels.one_hot(labels, k)))
        return hard + soft_labels.outlier_exposure_loss(outlier_logits, weight=config.oe_weight)
    if config.method == "kd":
        return jnp.mean(soft_labels.kd_loss(
            logits, teacher_logits, labels, temperature=config.kd_temperature,
            weight=config.kd_weight, num_classes=k))
    # kd_incorrect: the teacher shapes only the incorrect-class mass, at temperature T.
    targets = soft_labels.teacher_incorrect(
        labels, teacher_logits / config.kd_temperature, config.label_smoothing)
    return jnp.mean(soft_labels.cross_entropy(logits, targets))


def make_train_step(model: nn.Module, step_config: StepConfig, mesh: Mesh, *,
                    teacher_model: nn.Module | None = None) -> Callable:
    """Returns jitted `step(state, batch, teacher_variables) -> (state, metrics)`.

    batch: {"image": uint8 [B, H, W, C], "label": int32 [B]} sharded over "data", plus
    "outlier_image" uint8 [B_oe, H, W, C] for oe. teacher_variables: the teacher's
    {"params", "batch_stats"} for kd and kd_incorrect, else None; place them on the mesh once
    (`jax.device_put(v, NamedSharding(mesh, P()))`), since host arrays would be copied to the
    devices at every step. metrics: float32 scalars
    loss, accuracy (ID rows only) and learning_rate (the rate this update used).
    The state argument is donated: do not use it after the call.
    """
    config = step_config
    if config.method in TEACHER_METHODS and teacher_model is None:
        raise ValueError(f"method {config.method!r} needs a teacher_model")
    replicated = NamedSharding(mesh, P())
    batch_sharded = NamedSharding(mesh, P(DATA_AXIS))

    def train_step(state: TrainState, batch, teacher_variables):
        key = jax.random.fold_in(jax.random.key(config.seed), state.step)
        dropout_key, augment_key = jax.random.split(key)
        labels = batch["label"]
        num_id = labels.shape[0]
        images = batch["image"]
        if config.method == "oe":
            # One forward pass over ID and outlier images together, as the OE reference does
            # (torch.cat((in_set[0], out_set[0]))): BatchNorm normalises both with one set of
            # batch statistics, and its running averages include the outliers.
            images = jnp.concatenate([images, batch["outlier_image"]])
        x = _prepare_images(images, augment_key, config)

        teacher_logits = None
        if config.method in TEACHER_METHODS:
            # Same augmented batch as the student, inference mode, no gradient into the teacher.
            teacher_logits = jax.lax.stop_gradient(
                teacher_model.apply(teacher_variables, x, train=False))

        def loss_fn(params):
            logits, updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats}, x, train=True,
                mutable=["batch_stats"], rngs={"dropout": dropout_key})
            id_logits, outlier_logits = logits[:num_id], logits[num_id:]
            loss = _loss(config, id_logits, labels, outlier_logits, teacher_logits)
            return loss, (id_logits, updates["batch_stats"])

        (loss, (id_logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1, params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats, opt_state=opt_state)
        metrics = {
            "loss": loss.astype(jnp.float32),
            "accuracy": jnp.mean((jnp.argmax(id_logits, -1) == labels).astype(jnp.float32)),
            "learning_rate": _learning_rate(opt_state),
        }
        return new_state, metrics

    out_shardings = (replicated, replicated)
    return jax.jit(
        _auto_sharded(train_step, mesh, out_shardings),
        in_shardings=(replicated, batch_sharded, replicated),
        out_shardings=out_shardings,
        donate_argnums=0,
    )


def make_eval_step(model: nn.Module, step_config: StepConfig, mesh: Mesh) -> Callable:
    """Returns jitted `eval_step(variables, batch) -> {"logits": [B, K], "features": [B, D]}`.

    Inference mode (BatchNorm running statistics, no dropout), no augmentation; outputs float32,
    sharded over "data" like the batch. Padded rows are computed like any other: the caller's
    mask keeps them out of every metric.
    """
    replicated = NamedSharding(mesh, P())
    batch_sharded = NamedSharding(mesh, P(DATA_AXIS))
    dtype = jnp.dtype(step_config.compute_dtype)

    def eval_step(variables, batch):
        x = augment.normalize(batch["image"], step_config.mean, step_config.std, dtype=dtype)
        logits, features = model.apply(variables, x, train=False, return_features=True)
        return {"logits": logits.astype(jnp.float32), "features": features.astype(jnp.float32)}

    return jax.jit(
        _auto_sharded(eval_step, mesh, batch_sharded),
        in_shardings=(replicated, batch_sharded),
        out_shardings=batch_sharded,
    )
