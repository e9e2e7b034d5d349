import math

import numpy as np
from scipy.special import erfc


def gelu(x, approximate="none"):
    """GELU(x) = x * Phi(x), Phi the standard normal CDF; "tanh" is GPT-2's approximation.

    Both are written in a form that keeps full relative precision where x << 0 (there
    1 + erf(.) and 1 + tanh(.) cancel to a few digits in float32):
      x/2 * (1 + erf(x / sqrt 2))  = x/2 * erfc(-x / sqrt 2)
      x/2 * (1 + tanh(u))          = x / (1 + exp(-2u)),  u = sqrt(2/pi) * (x + 0.044715 x^3)
    """
    if approximate == "tanh":
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        with np.errstate(over="ignore"):  # exp(-2u) -> inf for x << 0 gives x / inf = -0, as it should
            return x / (1 + np.exp(-2 * u))
    return 0.5 * x * erfc(x * (-1 / math.sqrt(2)))
