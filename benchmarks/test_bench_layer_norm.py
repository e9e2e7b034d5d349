import pytest
from _runner import cases, run_case


@pytest.mark.parametrize("case", cases("layer_norm"))
def test_layer_norm(benchmark, case, runner):
    run_case(benchmark, case, runner)
