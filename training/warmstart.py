"""Start training from a shipped ONNX model instead of random weights (fine-tuning).

The exported graphs hold the networks with every batch norm folded into the convolution
before it (``do_constant_folding``). :func:`load_det` / :func:`load_seg` rebuild a
:class:`training.network.DetNet` / ``SegNet`` from such a file: each ``Conv`` node of the
graph, in graph order, is matched to the network's ``nn.Conv2d`` layers in the order one
forward pass calls them (shapes must agree one by one); a conv followed by batch norm gets
the folded weight, and its batch norm becomes the identity plus the folded bias (running mean
0, variance 1, scale √(1 + eps)). The rebuilt network reproduces the file's outputs
(:func:`training.export.parity`, checked by :func:`load_det` / :func:`load_seg` and by
``tests``' warm-start test). Batch norms stay in eval mode while fine-tuning
(:func:`freeze_norms`): their statistics are the folded ones, and a fine-tune changes only
the weights and the affine terms.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from training.network import DetNet, SegNet

__all__ = ["freeze_norms", "load_det", "load_seg"]

Net = TypeVar("Net", DetNet, SegNet)


def _onnx_convs(path: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``(weight, bias)`` of every Conv node of the ONNX graph, in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: np.array(numpy_helper.to_array(t)) for t in model.graph.initializer}
    convs: list[tuple[np.ndarray, np.ndarray | None]] = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        if node.input[1] not in inits:
            raise ValueError(f"{path}: Conv {node.name!r} has no constant weight")
        bias = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        convs.append((inits[node.input[1]], bias))
    return convs


def _call_order(net: nn.Module, sample: Tensor) -> list[nn.Conv2d]:
    """The network's convolutions in the order one forward pass calls them."""
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            net.eval()
            net(sample)
    finally:
        for h in hooks:
            h.remove()
    return order


def _norm_after(net: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Each conv that a batch norm follows inside a ``cbs`` block, with that batch norm."""
    pairs: dict[nn.Conv2d, nn.BatchNorm2d] = {}
    for m in net.modules():
        if isinstance(m, nn.Sequential):
            for a, b in itertools.pairwise(m):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    pairs[a] = b
    return pairs


def _fill(net: Net, path: Path, input_size: int) -> Net:
    convs = _onnx_convs(path)
    order = _call_order(net, torch.zeros(1, 3, input_size, input_size))
    if len(convs) != len(order):
        raise ValueError(
            f"{path}: {len(convs)} Conv nodes, the network has {len(order)} convolutions — "
            "not a file this network exported"
        )
    norms = _norm_after(net)
    with torch.no_grad():
        for i, (conv, (weight, bias)) in enumerate(zip(order, convs, strict=True)):
            if tuple(conv.weight.shape) != weight.shape:
                raise ValueError(
                    f"{path}: Conv #{i} has weight {weight.shape}, the network's "
                    f"{tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(torch.from_numpy(weight))
            b = torch.from_numpy(bias) if bias is not None else torch.zeros(weight.shape[0])
            norm = norms.get(conv)
            if norm is not None:
                mean, var = norm.running_mean, norm.running_var
                # cbs' batch norms track running statistics
                assert mean is not None
                assert var is not None
                mean.zero_()
                var.fill_(1.0)
                norm.weight.fill_(float(np.sqrt(1.0 + norm.eps)))
                norm.bias.copy_(b)
            elif conv.bias is not None:
                conv.bias.copy_(b)
            elif bias is not None and np.any(bias != 0):
                raise ValueError(f"{path}: Conv #{i} has a bias the network cannot hold")
    net.eval()
    return net


def load_det(path: Path) -> DetNet:
    """A :class:`DetNet` holding ``det.onnx``'s weights (eval mode)."""
    from training.layout import DET_IMGSZ

    return _fill(DetNet(), path, DET_IMGSZ // 8)


def load_seg(path: Path) -> SegNet:
    """A :class:`SegNet` holding ``seg.onnx``'s weights (eval mode)."""
    from training.layout import SEG_NET

    return _fill(SegNet(), path, SEG_NET)


def freeze_norms(net: nn.Module) -> None:
    """Batch norms to eval mode (running statistics fixed); call after ``net.train()``."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
