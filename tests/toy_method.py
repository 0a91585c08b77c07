"""A method that no built-in one resembles, added at run time as a user would add theirs: its own
hyperparameter (`toy.gain`), its own loss and its own batch transform. Nothing else in the
package names it: the tests that use it prove that a method is its record and its functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from softlabel_ood import methods
from softlabel_ood.training import batch_transforms, method_losses, soft_labels

GAIN = methods.Hyperparameter(
    "toy.gain", "the mass moved from the target to class 0, and the noise added to the images",
    default=0.2, neutral=0.0, allowed="a number in (0, 1)", ok=lambda v: 0 < v < 1, symbol="g")
TOY = methods.Method("toy", "mass g on class 0, noise of scale g on the images",
                     loss="toward_class_zero", hyperparameters=(GAIN,), transform="toy_noise",
                     strength="toy.gain")
traced = []  # ("loss" | "transform", shape) each time one of them is traced into a program


def toward_class_zero(hp, logits, inputs: method_losses.LossInputs) -> jax.Array:
    traced.append(("loss", logits.shape))
    gain = hp.method_values["toy.gain"]
    zero = soft_labels.one_hot(jnp.zeros_like(inputs.labels), logits.shape[-1])
    return jnp.mean(soft_labels.cross_entropy(logits, (1 - gain) * inputs.targets + gain * zero))


def toy_noise(key, hp, images, targets):
    traced.append(("transform", images.shape))
    noise = jax.random.normal(key, images.shape, jnp.float32)
    return images + hp.method_values["toy.gain"] * noise, targets


def install(setitem) -> None:
    """Adds the method, its loss and its transform with `setitem(mapping, key, value)`:
    pytest's `monkeypatch.setitem` in a test, `operator.setitem` in a config file."""
    setitem(methods.BY_NAME, TOY.name, TOY)
    setitem(method_losses.LOSSES, TOY.loss, toward_class_zero)
    setitem(batch_transforms.TRANSFORMS, TOY.transform, toy_noise)
