import keras
import numpy as np
import pytest

from helpers.batchnorm import batch_statistics, bn_layers, population_statistics, precise_bn, running_variance_error
from helpers.lessons.l02 import bn_forward
from helpers.workbook.environment import seed_everything
from helpers.models import small_cnn


@pytest.mark.parametrize("shape", [(16, 5), (4, 6, 6, 3)])
def test_reference_bn_matches_keras_in_both_modes(shape):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
    layer = keras.layers.BatchNormalization()
    layer.build(shape)
    C = shape[-1]
    gamma, beta = rng.normal(size=C), rng.normal(size=C)
    mm, mv = rng.normal(size=C), rng.random(C) + 0.5
    layer.set_weights([g.astype(np.float32) for g in (gamma, beta, mm, mv)])
    assert np.allclose(layer(x, training=False), bn_forward(x, gamma, beta, training=False, moving_mean=mm, moving_var=mv),
                       atol=1e-5)
    assert np.allclose(layer(x, training=True), bn_forward(x, gamma, beta, training=True), atol=1e-5)


def test_batch_statistics_biased_and_unbiased():
    x = np.array([[1.0], [3.0]])
    assert batch_statistics(x)[1][0] == 1.0
    assert batch_statistics(x, unbiased=True)[1][0] == 2.0


def test_precise_bn_assigns_the_exact_statistics():
    seed_everything(0)
    model = small_cnn("batch", filters=(4, 8), dense=8)
    x = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
    assert len(bn_layers(model)) == 3
    assert max(running_variance_error(model, x)) > 0.1     # untrained moving variance is 1
    precise_bn(model, x, batch_size=16)
    assert max(running_variance_error(model, x)) < 1e-4
    # the first BN's input does not depend on any BN: check it against a direct computation
    conv = keras.Model(model.inputs[0], bn_layers(model)[0].input)
    mean, var = batch_statistics(np.asarray(conv(x)), unbiased=True)
    assert np.allclose(np.asarray(bn_layers(model)[0].moving_variance), var, rtol=1e-4)
    assert np.allclose(population_statistics(model, x)[0][0], mean, atol=1e-5)


def test_preserved_bn_state_restores_moving_and_renorm_statistics():
    import keras
    from helpers.batchnorm import bn_layers, preserved_bn_state
    seed_everything(0)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(renorm=True)])
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization(), inner])
    layers = bn_layers(model)
    assert len(layers) == 2  # the nested model's BN is found too
    before = [[np.array(v) for v in l.non_trainable_variables] for l in layers]
    assert len(before[1]) > 2  # renorm keeps extra moving statistics
    x = np.random.default_rng(0).normal(3.0, 2.0, (16, 4)).astype("float32")
    with preserved_bn_state(model):
        model(x, training=True)
        changed = [[not np.allclose(np.array(v), b) for v, b in zip(l.non_trainable_variables, bs)]
                   for l, bs in zip(layers, before)]
    assert all(any(c) for c in changed), "a training-mode call should have moved the statistics"
    after = [[np.array(v) for v in l.non_trainable_variables] for l in layers]
    for a_layer, b_layer in zip(after, before):
        for a, b in zip(a_layer, b_layer):
            np.testing.assert_array_equal(a, b)
