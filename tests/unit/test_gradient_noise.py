import numpy as np
import pytest

from helpers.batch_size import epochs_for, last_batch_size, steps_per_epoch
from helpers.gradient_noise import SoftmaxRegression, measure_gradient_noise, tf_gradient


def test_step_arithmetic():
    assert steps_per_epoch(1438, 32) == 45 and last_batch_size(1438, 32) == 30
    assert steps_per_epoch(64, 32) == 2 and last_batch_size(64, 32) == 32
    assert epochs_for(1000, 100, 55_000) == pytest.approx(1.8181818)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = rng.integers(0, 3, 200)
    return SoftmaxRegression.init(5, 3, rng, scale=0.5), X, y


def test_per_example_gradients_average_to_the_gradient(problem):
    model, X, y = problem
    assert np.allclose(model.per_example_gradients(X, y).mean(axis=0), model.gradient(X, y))


def test_gradient_matches_finite_differences_and_tensorflow(problem):
    model, X, y = problem
    g = model.gradient(X, y)
    eps = 1e-6
    m2 = model.copy()
    m2.W[1, 2] += eps
    assert (m2.loss(X, y) - model.loss(X, y)) / eps == pytest.approx(g[1 * 3 + 2], abs=1e-5)
    assert np.allclose(g, tf_gradient(model, X, y), atol=1e-10)


def test_noise_follows_one_over_b(problem):
    model, X, y = problem
    noise = measure_gradient_noise(model, X, y, [1, 4, 16], 2000, np.random.default_rng(1))
    ratio = noise.variance / noise.theory(noise.batch_sizes)
    assert np.all(np.abs(ratio - 1) < 0.1)
    assert -1.2 < noise.loglog_slope < -0.9
    assert noise.noise_scale == pytest.approx(noise.trace_sigma / noise.grad_norm_sq)


def test_two_batch_noise_scale_recovers_a_known_gradient_and_noise():
    # per-example gradients with a known mean G and covariance Σ: the estimator sees only mini-batch norms
    from helpers.gradient_noise import two_batch_noise_scale
    rng = np.random.default_rng(0)
    G = np.array([0.3, -0.2, 0.1])
    sd = np.array([1.0, 2.0, 0.5])      # tr(Σ) = 1 + 4 + 0.25 = 5.25, |G|^2 = 0.14: B_simple = 37.5
    def sq_norms(b, n):
        return np.array([np.sum((G + rng.normal(0, sd, (b, 3)).mean(0)) ** 2) for _ in range(n)])
    est = two_batch_noise_scale(sq_norms(4, 20000), 4, sq_norms(256, 20000), 256)
    true_trace, true_g = float(np.sum(sd ** 2)), float(G @ G)
    assert est.trace_sigma == pytest.approx(true_trace, rel=0.05)
    assert est.grad_norm_sq == pytest.approx(true_g, rel=0.1)
    assert est.b_simple == pytest.approx(true_trace / true_g, rel=0.15)
    with pytest.raises(ValueError):
        two_batch_noise_scale([1.0], 8, [1.0], 8)


def test_simple_noise_scale_is_the_explicit_covariance_trace_over_g_squared(problem):
    from helpers.gradient_noise import simple_noise_scale
    model, X, y = problem
    per_example = model.per_example_gradients(X, y)
    G = per_example.mean(0)
    trace = np.sum((per_example - G) ** 2) / (len(X) - 1)
    got = simple_noise_scale(model, X, y)
    assert got["trace_cov"] == pytest.approx(trace, rel=1e-10)
    assert got["b_simple"] == pytest.approx(trace / (G @ G), rel=1e-10)
    np.testing.assert_allclose(model.per_example_sq_norms(X, y), np.sum(per_example ** 2, axis=1), rtol=1e-10)


def test_two_batch_estimate_from_minibatch_gradients_of_the_softmax_model(problem):
    """Only mini-batch gradients, no G: the estimate lands near the exact B_simple, and misses a wrong one."""
    from helpers.gradient_noise import minibatch_sq_norms, simple_noise_scale, two_batch_noise_scale
    model, X, y = problem
    rng = np.random.default_rng(5)
    exact = simple_noise_scale(model, X, y)["b_simple"]
    est = two_batch_noise_scale(minibatch_sq_norms(model, X, y, 2, 4000, rng), 2,
                                minibatch_sq_norms(model, X, y, 64, 4000, rng), 64)
    assert est.b_simple == pytest.approx(exact, rel=0.2)


def _reference_steps(X, y, b, lr, seed, target, max_steps=400):
    """One run written plainly with SoftmaxRegression (float64): what steps_to_target_sweep stacks and vectorises."""
    model = SoftmaxRegression.init(X.shape[1], int(y.max()) + 1, np.random.default_rng(seed))
    rng, n = np.random.default_rng(seed), len(X)
    spe = steps_per_epoch(n, b)
    start = model.loss(X, y)
    for step in range(max_steps):
        if step % spe == 0:
            order = rng.permutation(n)
        idx = order[(step % spe) * b:(step % spe + 1) * b]
        model.step(model.gradient(X[idx], y[idx]), lr)
        loss = model.loss(X, y)
        if not np.isfinite(loss) or loss > 4 * start:
            return None
        if loss <= target:
            return step + 1
    return None


def test_the_stacked_sweep_takes_the_steps_of_plain_runs():
    from helpers.gradient_noise import steps_to_target_sweep
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    runs = steps_to_target_sweep(X, y, X[:30], y[:30], batch_sizes=[4, 90], learning_rates=[0.3, 1.0, 30.0],
                                 seeds=[0, 1], target=0.45, max_steps=400, prune=False, progress=False)
    for (b, lr, s), run in runs.items():
        assert run.steps == _reference_steps(X.astype(np.float64), y, b, lr, s, 0.45), (b, lr, s)
    assert any(r.steps for r in runs.values()) and any(r.steps is None for r in runs.values())
    reached = [r for r in runs.values() if r.steps]
    assert all(0 <= r.test_accuracy <= 1 for r in reached)


def test_pruning_keeps_the_tuned_rates():
    from helpers.gradient_noise import steps_to_target_sweep, tuned_rates
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 5))
    y = (X[:, 0] > 0).astype(int)
    kw = dict(batch_sizes=[2, 8, 120], learning_rates=[0.1, 0.2, 0.4, 0.8, 1.6], seeds=[0, 1, 2], target=0.35,
              max_steps=600, progress=False)
    full = steps_to_target_sweep(X, y, X, y, prune=False, **kw)
    pruned = steps_to_target_sweep(X, y, X, y, prune=True, **kw)
    args = ([2, 8, 120], kw["learning_rates"], kw["seeds"])
    assert tuned_rates(pruned, *args) == tuned_rates(full, *args)
    assert sum(r.stopped_at is not None for r in pruned.values()) > 0          # pruning did stop some runs


def test_fit_steps_model_recovers_the_critical_batch():
    from helpers.gradient_noise import fit_steps_model
    b = np.array([4, 16, 64, 256, 1024])
    fit = fit_steps_model(b, 20 * (1 + 15 / b))
    assert fit["s_min"] == pytest.approx(20, rel=0.01) and fit["b_crit"] == pytest.approx(15, rel=0.01)
    noisy = fit_steps_model(b, 20 * (1 + 15 / b) * np.array([1.1, 0.9, 1.1, 0.9, 1.0]))
    assert 10 < noisy["b_crit"] < 22
