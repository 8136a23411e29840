"""Green on any machine: every notebook that reads a committed table passes under another machine's arithmetic.

Seeds 1 and 2 of those notebooks run perturbed (tests/notebook_runs.py, run_environment): seed 1 pinned to
one core with oneDNN on, seed 2 with one ulp added to one initial weight of every model (and NumPy without
AVX-512 on a CPU that has it). Each recomputes committed rows live and judges them by the committed seeds'
spread; a float tolerance against its own seed's row fails here (see the closing note of that change).
The findings tests of those notebooks then check the lessons' claims on the same perturbed runs.
"""
import pytest
from notebook_runs import TABLE_READERS, has_avx512

PERTURBED = [(stem, seed) for stem in TABLE_READERS for seed in (1, 2)]


@pytest.mark.parametrize("stem,seed", PERTURBED)
def test_table_reader_passes_under_other_arithmetic(findings, stem, seed):
    f = findings(stem, seed)       # a failed check cell fails this test with the cell's message
    if seed == 1:
        assert f["arithmetic_tf_enable_onednn_opts"] == "1"
        assert f["arithmetic_cpus_allowed"] == 1
    else:
        assert f["arithmetic_one_ulp_nudge"] is True
        assert bool(f["arithmetic_npy_disable_cpu_features"]) == has_avx512()
    assert f["committed_rows_recomputed"] >= 1
    assert f["committed_rows_within_spread"] is True


@pytest.mark.parametrize("stem", TABLE_READERS)
def test_default_run_records_its_arithmetic_and_its_recomputed_rows(findings, stem):
    f = findings(stem, 0)
    assert f["arithmetic_one_ulp_nudge"] is False
    assert f["committed_rows_recomputed"] >= 1 and f["committed_rows_within_spread"] is True
