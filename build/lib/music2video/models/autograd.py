"""The straight-through gradient tricks of VQGAN-CLIP."""

import torch


class _ReplaceGrad(torch.autograd.Function):
    """Forward one tensor, send the gradient to another."""

    @staticmethod
    def forward(ctx, x_forward, x_backward):
        ctx.shape = x_backward.shape
        return x_forward

    @staticmethod
    def backward(ctx, grad_in):
        return None, grad_in.sum_to_size(ctx.shape)


class _ClampWithGrad(torch.autograd.Function):
    """Clamp that still lets gradients pull values back into range."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad_in):
        (x,) = ctx.saved_tensors
        inward = grad_in * (x - x.clamp(ctx.lo, ctx.hi)) >= 0
        return grad_in * inward, None, None


def replace_grad(x_forward: torch.Tensor, x_backward: torch.Tensor) -> torch.Tensor:
    """Value of x_forward, gradient flowing to x_backward."""
    return _ReplaceGrad.apply(x_forward, x_backward)


def clamp_with_grad(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamps x to [lo, hi]; out-of-range values still get gradients that point inwards."""
    return _ClampWithGrad.apply(x, lo, hi)


def vector_quantize(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Snaps each vector of x (..., e) to its nearest codebook row (n, e), straight-through.

    The distances stay fp32 under autocast: in bf16 near ties pick other codes."""
    with torch.autocast(x.device.type, enabled=False):
        xf, cf = x.float(), codebook.float()
        d = xf.pow(2).sum(-1, keepdim=True) + cf.pow(2).sum(1) - 2 * xf @ cf.T  # (..., n)
    x_q = codebook[d.argmin(-1)]  # (..., e)
    return replace_grad(x_q, x)
