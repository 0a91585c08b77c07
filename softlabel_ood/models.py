"""Image classifiers (flax.linen): WideResNet, CIFAR ResNet-18/34 and a small CNN.

Every module is called as `module.apply(variables, x, train, return_features=False)` on float
NHWC images and returns float32 logits [B, K], or `(logits, features)` with the penultimate
features [B, D] (the globally pooled activations the classifier reads) when `return_features`.
Variables are `{"params", "batch_stats"}`; dropout, where enabled, draws from the "dropout" rng.

`dtype` is the compute dtype (e.g. bfloat16); parameters and BatchNorm statistics stay float32 and
logits and features are returned in float32, so losses and saved predictions never see bfloat16.

BatchNorm follows PyTorch's defaults, which the reference code trained with: running statistics
updated as 0.9 * old + 0.1 * batch (flax `momentum` is the weight of the old value, so 0.9) and
eps 1e-5. One difference remains: PyTorch tracks the unbiased batch variance, flax the biased one
(a factor n / (n - 1) with n = batch x height x width, i.e. < 0.01% for CIFAR batches).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from softlabel_ood import model_names

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He et al. init with fan_out, untruncated: the OE WideResNet draws conv weights from
# N(0, 2 / (k * k * out_channels)); torchvision's ResNet does the same.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which the reference
# keeps for its classifier (its bias it sets to zero).
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

Dtype = Any


def _batch_norm(train: bool, dtype: Dtype) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        dtype=dtype, param_dtype=jnp.float32)


def _conv(features: int, kernel: int, stride: int, dtype: Dtype) -> nn.Conv:
    # Explicit symmetric padding (PyTorch's padding=k // 2), not "SAME": for stride 2 on an even
    # size, SAME pads only at the end and would shift every downsampled feature map by a pixel.
    pad = kernel // 2
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
        use_bias=False, kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32)


def _classifier(num_classes: int, dtype: Dtype) -> nn.Dense:
    return nn.Dense(num_classes, kernel_init=dense_init, bias_init=nn.initializers.zeros,
                    dtype=dtype, param_dtype=jnp.float32)


def _outputs(logits, features, return_features: bool):
    logits = logits.astype(jnp.float32)
    if return_features:
        return logits, features.astype(jnp.float32)
    return logits


def _pooled_head(x, num_classes: int, dropout_rate: float, dtype: Dtype, train: bool,
                 return_features: bool):
    """Global pool -> (optional dropout) -> classifier, for the models whose published
    architectures have no dropout: when asked for, it acts on the pooled features only.
    Called inside a module's compact __call__, so its layers belong to that module."""
    features = _global_average_pool(x)
    hidden = features
    if dropout_rate > 0:
        hidden = nn.Dropout(dropout_rate, deterministic=not train)(hidden)
    logits = _classifier(num_classes, dtype)(hidden)
    return _outputs(logits, features, return_features)


def _global_average_pool(x):
    # The references use avg_pool2d(8) (WRN) / avg_pool2d(4) (ResNet) on 32x32 inputs, which is
    # the global mean; the global mean also serves other image sizes.
    return jnp.mean(x, axis=(1, 2))


class WideBasicBlock(nn.Module):
    """Pre-activation block of the OE reference WideResNet (BN-ReLU-conv, BN-ReLU-dropout-conv)."""

    out_channels: int
    stride: int = 1
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        equal_in_out = x.shape[-1] == self.out_channels
        if equal_in_out and self.stride != 1:
            raise ValueError("a strided WideResNet block must change the channel count")
        preact = nn.relu(_batch_norm(train, self.dtype)(x))
        out = _conv(self.out_channels, 3, self.stride, self.dtype)(preact)
        out = nn.relu(_batch_norm(train, self.dtype)(out))
        if self.dropout_rate > 0:
            out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
        out = _conv(self.out_channels, 3, 1, self.dtype)(out)
        # As in the reference: the identity shortcut carries the raw input, while the 1x1
        # projection (used when the width changes) reads the pre-activated input.
        shortcut = x
        if not equal_in_out:
            shortcut = _conv(self.out_channels, 1, self.stride, self.dtype)(preact)
        return shortcut + out


class WideResNet(nn.Module):
    """WRN-depth-width (Zagoruyko & Komodakis), as in the Outlier Exposure code's CIFAR models."""

    depth: int
    width: int
    num_classes: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, return_features: bool = False):
        if (self.depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {self.depth}")
        blocks_per_stage = (self.depth - 4) // 6
        x = _conv(16, 3, 1, self.dtype)(x.astype(self.dtype))
        for stage, channels in enumerate((16 * self.width, 32 * self.width, 64 * self.width)):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                x = WideBasicBlock(channels, stride, self.dropout_rate, self.dtype)(x, train)
        x = nn.relu(_batch_norm(train, self.dtype)(x))
        features = _global_average_pool(x)
        logits = _classifier(self.num_classes, self.dtype)(features)
        return _outputs(logits, features, return_features)


class ResNetBlock(nn.Module):
    """Post-activation basic block of the CIFAR ResNet (He et al. 2016, kuangliu/pytorch-cifar)."""

    out_channels: int
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        out = _conv(self.out_channels, 3, self.stride, self.dtype)(x)
        out = nn.relu(_batch_norm(train, self.dtype)(out))
        out = _conv(self.out_channels, 3, 1, self.dtype)(out)
        out = _batch_norm(train, self.dtype)(out)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.out_channels:
            shortcut = _batch_norm(train, self.dtype)(
                _conv(self.out_channels, 1, self.stride, self.dtype)(x))
        return nn.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-18/34 for 32x32 inputs: a 3x3 stem with no max-pool, then four stages of blocks.

    `dropout_rate` > 0 adds dropout on the pooled features before the classifier (the published
    architecture has none; it is there so that a config's dropout field means something).
    """

    stage_sizes: tuple[int, ...]
    num_classes: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, return_features: bool = False):
        x = _conv(64, 3, 1, self.dtype)(x.astype(self.dtype))
        x = nn.relu(_batch_norm(train, self.dtype)(x))
        for stage, num_blocks in enumerate(self.stage_sizes):
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                x = ResNetBlock(64 * 2**stage, stride, self.dtype)(x, train)
        return _pooled_head(x, self.num_classes, self.dropout_rate, self.dtype, train,
                            return_features)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers and a linear classifier: trains in seconds on 8x8 or 28x28
    grayscale images, for tests, notebooks and quick experiments."""

    num_classes: int
    channels: tuple[int, ...] = (16, 32, 64)
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, return_features: bool = False):
        x = x.astype(self.dtype)
        for i, channels in enumerate(self.channels):
            x = _conv(channels, 3, 1 if i == 0 else 2, self.dtype)(x)
            x = nn.relu(_batch_norm(train, self.dtype)(x))
        return _pooled_head(x, self.num_classes, self.dropout_rate, self.dtype, train,
                            return_features)


def create_model(name: str, *, num_classes: int, dropout_rate: float = 0.0,
                 dtype=jnp.float32) -> nn.Module:
    """The model a config names (`model_names`: "wrn<depth>_<width>", "resnet18", "resnet34" or
    "small_cnn"). `dtype` is the compute dtype (a jnp dtype or its name)."""
    dtype = jnp.dtype(dtype)
    parsed = model_names.parse(name)
    if parsed.family == "wrn":
        make = functools.partial(WideResNet, parsed.depth, parsed.width)
    elif parsed.family == "resnet":
        make = functools.partial(CifarResNet, parsed.stages)
    else:
        make = SmallCNN
    return make(num_classes=num_classes, dropout_rate=dropout_rate, dtype=dtype)


def classifier_head(params) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(kernel [D, K], bias [K]) of the final dense layer: logits = features @ kernel + bias.

    Every model here has exactly one dense layer, the classifier, created inside the top-level
    module (so flax names it `Dense_0` at the top of `params`).
    """
    layer = classifier_layer(params)
    return jnp.asarray(layer["kernel"], jnp.float32), jnp.asarray(layer["bias"], jnp.float32)


def classifier_layer(params) -> dict:
    """The final dense layer's {"kernel", "bias"} as `params` holds them (arrays, or the shapes
    of a stored checkpoint)."""
    dense = [name for name in params if name.startswith("Dense_")]
    if len(dense) != 1:
        raise ValueError(f"expected one top-level dense layer in params, found {dense}")
    return params[dense[0]]
