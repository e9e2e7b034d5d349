"""Sequential and ModuleList, named by index as torch ("0", "1", ...)."""
from fastattn.nn.module import Module


def _checked(modules):
    modules = list(modules)
    for i, m in enumerate(modules):
        if not isinstance(m, Module):
            raise TypeError(f"element {i} is not a fastattn.nn.Module: {type(m).__name__}")
    return modules


class ModuleList(Module):
    """A list of modules whose parameters are named by index (layers.0.weight); no forward."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module):
        (module,) = _checked([module])
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in _checked(modules):
            self.append(m)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __getitem__(self, i):
        items = list(self._modules.values())
        if isinstance(i, slice):
            return ModuleList(items[i])
        return items[i]


class Sequential(ModuleList):
    """Sequential(*modules): forward runs them in order on one array; backward in reverse."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, input):
        x = input
        for m in self:
            x = m(x)
        return x

    def backward(self, grad_output):
        g = grad_output
        for m in reversed(list(self)):
            g = m.backward(g)
        return g
