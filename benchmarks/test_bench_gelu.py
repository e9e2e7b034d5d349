import pytest
from _runner import cases, run_case


@pytest.mark.parametrize("case", cases("gelu"))
def test_gelu(benchmark, case, runner):
    run_case(benchmark, case, runner)
