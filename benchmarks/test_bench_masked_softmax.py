import pytest
from _runner import cases, run_case


@pytest.mark.parametrize("case", cases("masked_softmax"))
def test_masked_softmax(benchmark, case, runner):
    run_case(benchmark, case, runner)
