import numpy as np
import pytest

from helpers.data import batch_dataset, epoch_batches, grouped_batches, iid_batches, load_digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_shapes_dtypes_and_ranges(digits):
    assert digits.x_train.shape == (1438, 8, 8, 1) and digits.x_test.shape == (359, 8, 8, 1)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0
    assert digits.flat()[0].shape == (1438, 64)


def test_split_is_fixed_and_stratified(digits):
    again = load_digits()
    assert np.array_equal(digits.x_test, again.x_test) and np.array_equal(digits.y_train, again.y_train)
    frac = np.bincount(digits.y_test) / (np.bincount(digits.y_test) + np.bincount(digits.y_train))
    assert np.all(np.abs(frac - 0.2) < 0.01)
    # the sizes helpers/data.py and data/README.md state
    assert (len(digits.y_train), len(digits.y_test)) == (1438, 359)


def test_iid_batches_cover_every_index_once():
    rng = np.random.default_rng(0)
    batches = iid_batches(103, 10, rng)
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert sorted(np.concatenate(batches)) == list(range(103))
    assert len(iid_batches(103, 10, rng, drop_remainder=True)) == 10


def test_grouped_batches_hold_one_class_each(digits):
    batches = grouped_batches(digits.y_train, 2, np.random.default_rng(0))
    assert all(len(set(digits.y_train[b])) == 1 for b in batches)
    assert sorted(np.concatenate(batches)) == list(range(len(digits.y_train)))
    # the order of classes across batches is shuffled, not sorted
    assert len(set(digits.y_train[b[0]] for b in batches[:10])) > 1


def test_epoch_batches_rejects_unknown_order(digits):
    with pytest.raises(ValueError, match="order"):
        epoch_batches(digits.y_train, 4, "sorted", np.random.default_rng(0))


def test_batch_dataset_is_deterministic_per_seed(digits):
    x, y = digits.x_train[:50], digits.y_train[:50]
    a, steps = batch_dataset(x, y, 8, "iid", epochs=2, seed=1)
    b, _ = batch_dataset(x, y, 8, "iid", epochs=2, seed=1)
    ya = np.concatenate([yb.numpy() for _, yb in a])
    yb_ = np.concatenate([yb.numpy() for _, yb in b])
    assert steps == 7 and np.array_equal(ya, yb_) and len(ya) == 100
