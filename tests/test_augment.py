import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlabel_ood.data import augment

PAD = 4


def reference_crop_flip(image, dy, dx, flip, padding=PAD):
    """torchvision RandomCrop(padding, fill=0) at offset (dy, dx), then an optional flip."""
    h, w, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    out = padded[dy:dy + h, dx:dx + w]
    return out[:, ::-1] if flip else out


def recover_transforms(images, outputs):
    """For each example, the (dy, dx, flip) whose reference output matches (must be unique)."""
    found = []
    for image, output in zip(images, outputs, strict=True):
        matches = [(dy, dx, flip)
                   for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1) for flip in (0, 1)
                   if np.array_equal(reference_crop_flip(image, dy, dx, flip), output)]
        assert len(matches) == 1, matches
        found.append(matches[0])
    return np.array(found)


@pytest.fixture
def images():
    # Strictly positive, so a zero can only come from the padding.
    return np.random.default_rng(0).integers(1, 256, size=(256, 8, 8, 2), dtype=np.uint8)


def test_random_crop_flip_matches_torchvision_semantics(images):
    out = augment.random_crop_flip(jax.random.key(1), jnp.asarray(images))
    assert out.shape == images.shape
    assert out.dtype == jnp.uint8
    transforms = recover_transforms(images, np.asarray(out))
    # Per-example draws cover the whole range of offsets and both flips.
    assert set(transforms[:, 0]) == set(range(2 * PAD + 1))
    assert set(transforms[:, 1]) == set(range(2 * PAD + 1))
    assert 0.35 < transforms[:, 2].mean() < 0.65


def test_random_crop_flip_float_images_and_keys(images):
    floats = jnp.asarray(images[:8], jnp.float32) / 255.0
    a = augment.random_crop_flip(jax.random.key(0), floats)
    b = augment.random_crop_flip(jax.random.key(0), floats)
    c = augment.random_crop_flip(jax.random.key(2), floats)
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_crop_flip_under_jit_matches_eager(images):
    key = jax.random.key(3)
    eager = augment.random_crop_flip(key, jnp.asarray(images[:16]))
    jitted = jax.jit(augment.random_crop_flip)(key, jnp.asarray(images[:16]))
    np.testing.assert_array_equal(eager, jitted)


def test_normalize():
    images = jnp.array([[[[0, 255, 51]]]], jnp.uint8)
    out = augment.normalize(images, (0.5, 0.5, 0.2), (0.25, 0.5, 0.1))
    np.testing.assert_allclose(out, [[[[-2.0, 1.0, 0.0]]]], atol=1e-6)
    assert out.dtype == jnp.float32
    assert augment.normalize(images, (0.5,) * 3, (0.5,) * 3, dtype=jnp.bfloat16).dtype == (
        jnp.bfloat16)
