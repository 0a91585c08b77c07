"""JAX's persistent compilation cache, on by default for the commands.

A compiled program is stored on disk under a key of its HLO, its compile options and the
backend, so a second process, a resumed run or the next `reproduce` loads the executable
instead of compiling it again: the same program, so the same bits.

    SOFTLABEL_OOD_COMPILATION_CACHE=<dir>   where the cache lives
                                            (default ~/.cache/softlabel_ood/jax)
    SOFTLABEL_OOD_COMPILATION_CACHE=off     no persistent cache

A directory set through JAX's own `JAX_COMPILATION_CACHE_DIR` (or `jax.config`) is kept.
"""

from __future__ import annotations

import os

import jax

ENV = "SOFTLABEL_OOD_COMPILATION_CACHE"
DEFAULT_DIR = os.path.join("~", ".cache", "softlabel_ood", "jax")
_OFF = ("off", "0", "false", "none", "")


def directory() -> str | None:
    """The cache directory the commands use, or None when it is turned off."""
    value = os.environ.get(ENV, DEFAULT_DIR)
    if value.strip().lower() in _OFF:
        return None
    return os.path.abspath(os.path.expanduser(value))


def enable(path: str | None = None) -> str | None:
    """Turns the cache on in `path`, by default `directory()` (unless off); returns its directory.

    Without `path`, a directory JAX already has is kept.
    """
    if path is None:
        if jax.config.jax_compilation_cache_dir:
            return jax.config.jax_compilation_cache_dir
        path = directory()
        if path is None:
            return None
    jax.config.update("jax_compilation_cache_dir", path)
    # Cache every program, not only those over JAX's default of 1 s of compile time: a grid's
    # many small programs (initialisation, evaluation) add up to most of a short run's start.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
