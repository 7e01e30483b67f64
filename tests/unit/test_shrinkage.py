import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_shrinkage

from aeflow.evaluation.shrinkage import ledoit_wolf_shrinkage

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("n", "p", "block"),
    [(200, 16, 1000), (50, 128, 1000), (3, 40, 1000), (64, 23, 10), (40, 35, 7), (30, 20, 20)],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_shrinkage_is_scikit_learns_to_the_last_bit(n, p, block, overwrite):
    rng = np.random.default_rng(n * p + block)
    x = rng.standard_normal((n, p)) @ rng.standard_normal((p, p)) + rng.standard_normal(p)
    theirs = sklearn_shrinkage(x.copy(), block_size=block)
    given = x.copy()
    ours = ledoit_wolf_shrinkage(given, block, overwrite=overwrite)
    assert ours == float(theirs)
    assert 0 < ours <= 1
    # The samples are working memory only when the caller says so.
    assert np.array_equal(given, x) != overwrite


def test_constant_or_single_feature_data_gives_no_shrinkage_as_scikit_learn_does():
    assert ledoit_wolf_shrinkage(np.ones((10, 4))) == sklearn_shrinkage(np.ones((10, 4))) == 0
    assert ledoit_wolf_shrinkage(np.arange(10.0)[:, None]) == 0.0


def test_shrinkage_rejects_samples_that_are_not_a_matrix():
    with pytest.raises(ValueError, match=r"expected \(N, D\)"):
        ledoit_wolf_shrinkage(np.ones(5))
