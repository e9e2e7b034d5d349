"""Helpers for the fastattn.nn tests: a finite-difference check of any module's backward, and
the comparison of a module with its torch.nn twin (weights copied by state_dict)."""
import numpy as np


def gradcheck(module, inputs, call=None, n_coords=6, eps=1e-6, rtol=1e-6, atol=1e-8, seed=0, reseed=None):
    """Checks module.backward against central differences of L = sum(forward(*inputs) * G), G
    random, on a few coordinates of every float input and every parameter (float64 module and
    inputs). call(module, *inputs) -> output (default: module(*inputs)); the output may be a
    tuple, whose first element is used. reseed(): run before each forward (fixes dropout masks).
    Inputs that are the same array object stay shared (their gradient is the sum)."""
    rng = np.random.default_rng(seed)
    call = call or (lambda m, *xs: m(*xs))

    def run():
        if reseed is not None:
            reseed()
        out = call(module, *inputs)
        return out[0] if isinstance(out, tuple) else out

    out = run()
    G = rng.standard_normal(out.shape)
    module.zero_grad()
    grads = module.backward(G)
    grads = grads if isinstance(grads, tuple) else (grads,)

    def loss():
        return float(np.sum(run() * G))

    def numeric(array, index):
        old = array[index]
        array[index] = old + eps
        up = loss()
        array[index] = old - eps
        down = loss()
        array[index] = old
        return (up - down) / (2 * eps)

    checked = 0
    # input gradients: a shared input's gradient is the sum of the returned ones
    float_inputs = [x for x in inputs if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)]
    for x in {id(x): x for x in float_inputs}.values():
        total = sum(g for xi, g in zip(float_inputs, grads) if xi is x and g is not None)
        for index in _coords(rng, x.shape, n_coords):
            want = numeric(x, index)
            assert np.isclose(total[index], want, rtol=rtol, atol=atol), (index, total[index], want)
            checked += 1
    for name, p in module.named_parameters():
        for index in _coords(rng, p.data.shape, n_coords):
            want = numeric(p.data, index)
            assert np.isclose(p.grad[index], want, rtol=rtol, atol=atol), (name, index, p.grad[index], want)
            checked += 1
    assert checked > 0
    return checked


def _coords(rng, shape, n):
    if 0 in shape:
        return []
    size = int(np.prod(shape))
    flat = rng.choice(size, min(n, size), replace=False)
    return [np.unravel_index(i, shape) for i in flat]


def copy_to_torch(module, twin):
    """Loads module's state_dict (torch's names) into the torch module twin, strictly."""
    import torch

    twin.load_state_dict({k: torch.tensor(v) for k, v in module.state_dict().items()}, strict=True)
    return twin


def assert_param_grads_match(module, twin, rtol=1e-9, atol=1e-11):
    ours = dict(module.named_parameters())
    theirs = dict(twin.named_parameters())
    assert list(ours) == list(theirs)
    for name, p in ours.items():
        t = theirs[name].grad
        want = np.zeros(p.data.shape) if t is None else t.detach().numpy()
        np.testing.assert_allclose(p.grad, want, rtol=rtol, atol=atol, err_msg=name)
