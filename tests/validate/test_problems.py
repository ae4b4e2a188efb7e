import numpy as np
import pytest

from isograd.validate.problems import PROBLEMS, make_problem

EXPECTED = {
    "binary_linear", "binary_xor", "binary_rings", "multiclass_clusters", "multiclass_spirals",
    "multiclass_rings", "regression_linear", "regression_nonlinear",
}


def test_registry_has_the_eight_problems():
    assert set(PROBLEMS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_problem_is_seeded_and_well_formed(name):
    a, b = make_problem(name, seed=3), make_problem(name, seed=3)
    c = make_problem(name, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_eval.shape == (a.n_grid + len(a.y_heldout), a.in_dim)
    assert int(np.prod(a.grid_shape)) == a.n_grid
    # held-out points come from a separate stream: not a copy of the training set
    assert not np.allclose(a.x_eval[a.n_grid : a.n_grid + 5], a.x_train[:5])
    if a.task == "regression":
        assert a.in_dim == 1 and a.noise_var > 0 and a.out_dim == 1
    else:
        assert a.in_dim == 2 and a.noise_var is None
        assert set(np.unique(a.y_train)) == set(range(a.n_classes))
        assert a.out_dim == (1 if a.task == "binary" else a.n_classes)


def test_nonlinear_regression_has_a_gap():
    pb = make_problem("regression_nonlinear", n_train=500)
    assert not np.any(np.abs(pb.x_train[:, 0]) < 0.5)


def test_unknown_problem_lists_allowed():
    with pytest.raises(ValueError, match="binary_xor"):
        make_problem("moons")
