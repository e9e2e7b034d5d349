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


def gelu_backward(grad_output, x, approximate="none"):
    """grad_output * GELU'(x).

      erf form:  GELU'(x) = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi)
      tanh form: GELU(x) = x s, s = sigmoid(2u):  GELU'(x) = s + x * 2 s (1 - s) * du/dx
    The sigmoid is taken from t = exp(-|2u|) <= 1, which cannot overflow: s = 1/(1+t) (u >= 0) or
    t/(1+t) (u < 0), and s (1 - s) = t / (1+t)^2. x is clipped to [-40, 40], beyond which GELU' is
    exactly 1 or 0 in double, so that x = +-inf gives 1 or 0 instead of inf * 0 = NaN.
    """
    x = np.clip(x, -40, 40)  # (NaN stays NaN)
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        u = k * (x + 0.044715 * x**3)
        t = np.exp(-2 * np.abs(u))
        s = np.where(u >= 0, 1, t) / (1 + t)
        du = k * (1 + 3 * 0.044715 * x**2)
        return grad_output * (s + x * 2 * (t / (1 + t) ** 2) * du)
    cdf = 0.5 * erfc(x * (-1 / math.sqrt(2)))
    pdf = (1 / math.sqrt(2 * math.pi)) * np.exp(-0.5 * x * x)
    return grad_output * (cdf + x * pdf)
