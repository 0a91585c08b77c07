"""The OE reference optimizer and its cosine learning rate, with the rate a runtime value.

The peak learning rate and the number of steps are arguments of the compiled train step, not
constants baked into it, so that every run of a grid shares one executable. The optimizer is
built with `optax.inject_hyperparams` and the step writes the rate of each update into the
optimizer state before `tx.update` (`with_learning_rate`): the state then records the rate that
each update used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
# The OE reference anneals to an absolute learning rate of 1e-6 (lr_min = 1e-6 / lr as a factor).
FINAL_LEARNING_RATE = 1e-6


def oe_cosine_learning_rate(count, learning_rate, total_steps) -> jax.Array:
    """The OE reference's learning rate for update `count` (0, 1, ...); all arguments may be traced.

    The reference multiplies lr by `cosine_annealing(t, T, 1, 1e-6 / lr)`, i.e.
    lr_t = 1e-6 + (lr - 1e-6)·½(1 + cos(π t / T)), which is `optax.cosine_decay_schedule` with
    alpha = 1e-6 / lr, written out here with the same operations so that lr and T can be traced.
    It calls `scheduler.step()` before `optimizer.step()`, so its k-th update uses lr_{k+1}: the
    first update is already slightly decayed and the last one runs at 1e-6. Past T it stays there.
    """
    learning_rate = jnp.asarray(learning_rate, jnp.float32)
    total = jnp.asarray(total_steps, jnp.float32)
    alpha = FINAL_LEARNING_RATE / learning_rate
    t = jnp.minimum(jnp.asarray(count, jnp.float32) + 1, total)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * t / total))
    return learning_rate * ((1 - alpha) * cosine + alpha)


def oe_cosine_schedule(learning_rate: float, total_steps: int) -> optax.Schedule:
    """`oe_cosine_learning_rate` as an optax schedule of the update count."""
    if not learning_rate > 0 or total_steps <= 0:
        raise ValueError(f"need learning_rate > 0 and total_steps > 0, got {learning_rate}, "
                         f"{total_steps}")
    return lambda count: oe_cosine_learning_rate(count, learning_rate, total_steps)


def make_optimizer(*, weight_decay: float, momentum: float = 0.9, nesterov: bool = True,
                   optimizer: str = "sgd") -> optax.GradientTransformation:
    """The OE reference optimizer (default) or Adam/AdamW; the rate is set per update.

    sgd: torch.optim.SGD(lr, momentum, weight_decay, nesterov) exactly: the L2 term wd·θ is added
    to the gradient of every parameter (BatchNorm scales and biases included, as torch does)
    before the momentum buffer, and the update is -lr·(g + μ·buf) with buf = μ·buf + g.
    adam: the same L2-in-gradient decay in front of Adam (torch.optim.Adam's weight_decay).
    adamw: decoupled decay (torch.optim.AdamW / optax.adamw: θ -= lr·wd·θ).

    Call `with_learning_rate(opt_state, lr)` before every `update`; until then the rate is NaN,
    so an update that forgot it cannot pass unnoticed.
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

    return optax.inject_hyperparams(build)(learning_rate=jnp.nan)


def with_learning_rate(opt_state, learning_rate: jax.Array):
    """`opt_state` with the rate that the next update uses."""
    rate = jnp.asarray(learning_rate, jnp.float32)
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": rate})


def learning_rate(opt_state) -> jax.Array:
    """The rate recorded in `opt_state`: the one the latest update used."""
    return jnp.asarray(opt_state.hyperparams["learning_rate"], jnp.float32)
