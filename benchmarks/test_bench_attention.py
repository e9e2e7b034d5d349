import pytest
from _runner import cases, run_case


@pytest.mark.parametrize("case", cases("attention"))
def test_attention(benchmark, case, runner):
    run_case(benchmark, case, runner)
