"""The model names a config may give, read without JAX: `models.create_model` builds the model a
name describes, and the config's check refuses a name before anything is loaded.

    wrn<depth>_<width>   WideResNet, depth 6n + 4, width >= 1 (wrn40_2, wrn16_2, ...)
    resnet18, resnet34   the CIFAR ResNets
    small_cnn            a small convolutional network
"""

from __future__ import annotations

import dataclasses
import re

RESNET_STAGES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
ALLOWED = "wrn<depth>_<width> (depth 6n + 4), resnet18, resnet34 or small_cnn"
_WRN_NAME = re.compile(r"wrn(\d+)_(\d+)")


@dataclasses.dataclass(frozen=True)
class ModelName:
    family: str  # "wrn", "resnet" or "small_cnn"
    depth: int = 0  # wrn
    width: int = 0  # wrn
    stages: tuple[int, ...] = ()  # resnet: blocks per stage


def parse(name) -> ModelName:
    """What `name` describes; ValueError, naming it, unless it is one of the names above."""
    if not isinstance(name, str):
        raise ValueError(f"model {name!r}: expected {ALLOWED}")
    if match := _WRN_NAME.fullmatch(name):
        depth, width = int(match.group(1)), int(match.group(2))
        if (depth - 4) % 6 != 0 or width < 1:
            raise ValueError(f"model {name!r}: WideResNet depth must be 6n + 4 and width >= 1")
        return ModelName("wrn", depth=depth, width=width)
    if name in RESNET_STAGES:
        return ModelName("resnet", stages=RESNET_STAGES[name])
    if name == "small_cnn":
        return ModelName("small_cnn")
    raise ValueError(f"unknown model {name!r}; expected wrn<depth>_<width>, resnet18, resnet34 or "
                     "small_cnn")
