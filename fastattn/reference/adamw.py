import numpy as np


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.0):
    """One AdamW step (torch.optim.AdamW: the weight decay is decoupled from the gradient), in place
    on param, exp_avg and exp_avg_sq; returns None.

        param      *= 1 - lr * weight_decay
        exp_avg     = beta1 * exp_avg + (1 - beta1) * grad
        exp_avg_sq  = beta2 * exp_avg_sq + (1 - beta2) * grad^2
        param      -= lr * m_hat / (sqrt(v_hat) + eps),
                      m_hat = exp_avg / (1 - beta1^step),  v_hat = exp_avg_sq / (1 - beta2^step)

    Computed in double and rounded once, at the stores, as the compiled kernel does: in float32
    a tiny gradient's square underflows to 0, and with eps = 0 the step would be m / 0 = inf
    where double gives a step of about lr.
    """
    p, g, m, v = (np.asarray(a, dtype=np.float64) for a in (param, grad, exp_avg, exp_avg_sq))
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * np.square(g)
    p = p * (1 - lr * weight_decay) - lr * (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - beta2 ** step)) + eps)
    param[...] = p
    exp_avg[...] = m
    exp_avg_sq[...] = v
