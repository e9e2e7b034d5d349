"""Losses: CrossEntropyLoss (on F.cross_entropy and its backward)."""
import numbers

import numpy as np

from fastattn import functional as F
from fastattn.nn.module import Module


class CrossEntropyLoss(Module):
    """torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="mean", label_smoothing=0.0) over the
    last axis: loss = module(input (..., C) logits, target (...) int ids), a float; then
    module.backward() (grad_output, the loss's gradient, defaults to 1) returns d(loss)/d(input).
    Only the mean over the targets that are not ignore_index (torch's default reduction); class
    weights are not supported."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__()
        if weight is not None:
            raise ValueError("CrossEntropyLoss: weight (class weights) is not supported, pass None")
        if reduction != "mean":
            raise ValueError(f"CrossEntropyLoss: reduction must be 'mean' (the only one supported), got {reduction!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"CrossEntropyLoss: ignore_index must be an int, got {ignore_index!r}")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
            raise TypeError(f"CrossEntropyLoss: label_smoothing must be a number, got {label_smoothing!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.ignore_index, self.reduction, self.label_smoothing = int(ignore_index), reduction, float(label_smoothing)

    def forward(self, input, target):
        loss = F.cross_entropy(input, target, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)
        self._save(input, target)
        return loss

    def backward(self, grad_output=1.0):
        input, target = self._take()
        return F.cross_entropy_backward(input, target, grad_output, ignore_index=self.ignore_index,
                                        label_smoothing=self.label_smoothing)

    def extra_repr(self):
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"
