"""ODIN scores (Liang et al. 2018) at predict time: temperature scaling and input perturbation.

For a (temperature T, perturbation ε) pair, with f the model on normalised inputs and
ŷ = argmax_k f(x)_k:

    x'   = x - ε · sign(-∇_x log softmax(f(x) / T)_ŷ) / std
    odin = max_k softmax(f(x') / T)_k

x is the normalised input ((pixel / 255 - mean) / std per channel), and the gradient is taken with
respect to it, as the reference code does (its gradient sign is divided by the per-channel std,
e.g. 63.0/255.0 for CIFAR's red channel). Dividing by std makes the step ε · sign(...) in [0, 1]
pixel units, the same ε for every channel. The perturbed input is not clipped (neither does the
reference). With ε = 0 the score is the max softmax at temperature T of the plain logits, and
with T = 1 as well it is `msp`.

The gradient depends on T but not on ε, so one forward and backward pass per temperature serves
all of its ε: a pair with ε > 0 costs one extra forward pass, and every ε = 0 pair comes from the
plain logits at no cost. The step returns the eval step's logits and features as well, so that
predict runs one program per batch and the plain forward pass once. The pairs are compiled into
the function (a static argument); the batch is split over the mesh's "data" axis like the eval
step's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from softlabel_ood.configs.config_base import ODIN_PAIRS as DEFAULT_PAIRS  # noqa: F401 (defined there)
from softlabel_ood.data import augment
from softlabel_ood.training import evaluation
from softlabel_ood.training.runs_axis import PROGRAM_CACHE_SIZE
from softlabel_ood.training.train_step import StepConfig, prepare_images


def max_softmax(logits: jax.Array, temperature: float) -> jax.Array:
    return jnp.max(jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1), axis=-1)


def odin_scores(apply_fn: Callable, images_uint8: jax.Array, mean: Sequence[float],
                std: Sequence[float], pairs: Sequence[tuple[float, float]],
                dtype=jnp.float32, logits: jax.Array | None = None) -> jax.Array:
    """[B, P] ODIN scores of uint8 NHWC images for each (T, ε) in `pairs` (module docstring).

    `apply_fn(x)` maps normalised float images to logits [B, K]; `logits`, when given, are its
    outputs on the unperturbed images (saving that forward pass).
    """
    x = augment.normalize(images_uint8, mean, std, dtype=jnp.float32)
    std_array = jnp.asarray(std, jnp.float32)
    if logits is None:
        logits = apply_fn(x.astype(dtype))
    predicted = jnp.argmax(logits, axis=-1)

    def input_gradient(temperature):
        def log_prob_of_predicted(inputs):
            out = apply_fn(inputs.astype(dtype)).astype(jnp.float32) / temperature
            picked = jnp.take_along_axis(jax.nn.log_softmax(out, axis=-1),
                                         predicted[:, None], axis=-1)
            # In inference mode every example's output depends on its own input only, so the
            # gradient of the sum is each example's own gradient.
            return jnp.sum(picked)
        return jax.grad(log_prob_of_predicted)(x)

    columns = []
    gradients = {}
    for temperature, epsilon in pairs:
        if epsilon == 0:
            columns.append(max_softmax(logits, temperature))
            continue
        if temperature not in gradients:
            gradients[temperature] = jnp.sign(input_gradient(temperature))
        # x - ε sign(-∇ log S_ŷ) / std = x + ε sign(∇ log S_ŷ) / std
        perturbed = x + epsilon * gradients[temperature] / std_array
        columns.append(max_softmax(apply_fn(perturbed.astype(dtype)), temperature))
    return jnp.stack(columns, axis=-1)


# Cached like the train and eval programs: every run of a grid then reuses one traced program.
@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def make_odin_program(model: nn.Module, step_config: StepConfig, mesh: Mesh,
                      pairs: tuple[tuple[float, float], ...], *, runs: int,
                      batch_size: int) -> Callable:
    """Returns jitted `odin(variables, images, offset) -> {"logits": [runs, B, K], "features":
    [runs, B, D], "odin": [runs, B, len(pairs)]}`, all float32: the eval program's outputs and
    the ODIN scores from one program, so the plain forward pass is shared
    (`evaluation.make_eval_program` for the arguments)."""
    dtype = jnp.dtype(step_config.compute_dtype)

    def per_run(variables, images):
        def apply_fn(x):
            return model.apply(variables, x, train=False)
        # The eval program's forward pass, exactly (evaluation.make_eval_program).
        x = prepare_images(images, None, step_config)
        logits, features = model.apply(variables, x, train=False, return_features=True)
        scores = odin_scores(apply_fn, images, step_config.mean, step_config.std, pairs,
                             dtype=dtype, logits=logits)
        return {"logits": logits.astype(jnp.float32), "features": features.astype(jnp.float32),
                "odin": scores}

    return evaluation.batch_program(per_run, mesh, runs=runs, batch_size=batch_size)
