"""Same seed -> identical weights, at initialisation and after training."""
import numpy as np

from helpers.workbook.environment import seed_everything
from helpers.models import compile_classifier, small_cnn
from helpers.training import train


def _trained_weights(seed, x, y):
    seed_everything(seed)
    model = compile_classifier(small_cnn("batch", filters=(4, 8), dense=16))
    initial = [w.copy() for w in model.get_weights()]
    train(model, x, y, epochs=1, batch_size=16, progress=False)
    return initial, model.get_weights()


def test_same_seed_same_weights():
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    init_a, final_a = _trained_weights(5, x, y)
    init_b, final_b = _trained_weights(5, x, y)
    init_c, _ = _trained_weights(6, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(init_a, init_b))
    assert all(np.array_equal(a, b) for a, b in zip(final_a, final_b))
    assert not all(np.array_equal(a, c) for a, c in zip(init_a, init_c))
