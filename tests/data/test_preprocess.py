import pytest
import torch

from ntkscope.data._preprocess import standardize


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_standardize_refuses_non_finite_inputs_naming_the_data_set(bad):
    x = torch.tensor([[0.0, 1.0, 2.0], [1.0, bad, 3.0]])
    with pytest.raises(ValueError, match="data: 'mine' has NaN or infinite inputs"):
        standardize(x, "mine")
