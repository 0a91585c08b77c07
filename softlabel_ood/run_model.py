"""The model, step configuration, hyperparameters and train state of a run, from its config.

Derived values live here, not in config files: the number of classes and the image shape come
from the dataset, the number of steps from the dataset size, batch size and epochs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from softlabel_ood import datasets, input_pipeline, models, train_step


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
    info = datasets.info(config.dataset)
    return models.create_model(config.model, num_classes=info.num_classes,
                               dropout_rate=config.dropout_rate,
                               dtype=jnp.dtype(config.compute_dtype))


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
    return config.num_epochs * input_pipeline.steps_per_epoch(num_train_examples, config.batch_size)


# Train steps per compiled call when config.steps_per_call is 0 (automatic), by platform. On CPU
# one: XLA's CPU backend runs convolution gradients inside a loop 5-30x slower than outside one,
# and a CPU step is long enough for the host to dispatch the next one while it runs. Elsewhere
# the steps between two log lines (the CIFAR configs log every 100 steps).
AUTO_STEPS_PER_CALL = {"cpu": 1}
AUTO_STEPS_PER_CALL_ACCELERATOR = 100


def steps_per_call(config: ml_collections.ConfigDict) -> int:
    if config.steps_per_call:
        return config.steps_per_call
    return AUTO_STEPS_PER_CALL.get(jax.default_backend(), AUTO_STEPS_PER_CALL_ACCELERATOR)


def step_config(config: ml_collections.ConfigDict) -> train_step.StepConfig:
    """What the compiled step is specialised to; runs that agree on it share one executable."""
    info = datasets.info(config.dataset)
    return train_step.StepConfig(
        method=config.method, num_classes=info.num_classes, mean=tuple(info.mean),
        std=tuple(info.std), augment=info.augment, compute_dtype=config.compute_dtype,
        optimizer=config.optimizer, weight_decay=float(config.weight_decay),
        momentum=float(config.momentum), nesterov=bool(config.nesterov))


def hyperparams(config: ml_collections.ConfigDict, *,
                num_train_examples: int) -> train_step.Hyperparams:
    """The values the compiled step takes as arguments."""
    return train_step.Hyperparams.create(
        seed=config.seed, learning_rate=config.learning_rate,
        total_steps=total_steps(config, num_train_examples),
        label_smoothing=config.label_smoothing, kd_temperature=config.kd.temperature,
        kd_weight=config.kd.weight, oe_weight=config.oe.weight)


def create_state(config: ml_collections.ConfigDict, model: nn.Module,
                 mesh) -> train_step.TrainState:
    image_shape = datasets.info(config.dataset).image_shape
    return train_step.create_train_state(model, step_config(config), image_shape=image_shape,
                                         seed=config.seed, mesh=mesh)
