"""The model, optimizer and train state of a run, built from its config.

Derived values live here, not in config files: the number of classes and the image shape come
from the dataset, the number of steps from the dataset size, batch size and epochs.
"""

from __future__ import annotations

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


def step_config(config: ml_collections.ConfigDict) -> train_step.StepConfig:
    info = datasets.info(config.dataset)
    return train_step.StepConfig(
        method=config.method, num_classes=info.num_classes, seed=config.seed,
        mean=tuple(info.mean), std=tuple(info.std), augment=info.augment,
        label_smoothing=config.label_smoothing, kd_temperature=config.kd.temperature,
        kd_weight=config.kd.weight, oe_weight=config.oe.weight,
        compute_dtype=config.compute_dtype)


def create_state(config: ml_collections.ConfigDict, model: nn.Module, mesh, *,
                 num_train_examples: int) -> train_step.TrainState:
    tx = train_step.make_optimizer(
        learning_rate=config.learning_rate, weight_decay=config.weight_decay,
        total_steps=total_steps(config, num_train_examples), momentum=config.momentum,
        nesterov=config.nesterov, optimizer=config.optimizer)
    image_shape = datasets.info(config.dataset).image_shape
    return train_step.create_train_state(model, tx, image_shape=image_shape, seed=config.seed,
                                         mesh=mesh)
