"""Double precision for the scoring code only, without switching it on for the whole process.

Scores and metrics are computed in float64: softmax confidences of confident models crowd near 1,
where float32 would turn distinct examples into ties and change the metrics. Training code in the
same process keeps JAX's float32 default because the switch is scoped to a `with` block.
"""

from __future__ import annotations

import jax


def enabled():
    """A context manager in which jax.numpy creates float64 and int64 arrays."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    # JAX releases before the top-level switch kept it here.
    from jax.experimental import enable_x64  # pragma: no cover
    return enable_x64()  # pragma: no cover
