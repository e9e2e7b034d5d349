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

    Computed in the arrays' dtype (the compiled kernel works in double inside).
    """
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    param *= 1 - lr * weight_decay
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * np.square(grad)
    m_hat = exp_avg / bias_correction1
    v_hat = exp_avg_sq / bias_correction2
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)
