"""ONNX export in the Ultralytics YOLOv8/YOLO11 layouts, metadata, sidecars, parity check.

* ``det.onnx``: ``images [B,3,512,512]`` → ``output0 [B,5,4096]`` (cx, cy, w, h in input px,
  sigmoid score of ``plant``), one anchor per stride-8 cell, row-major.
* ``seg.onnx``: ``images [B,3,1024,1024]`` → ``output0 [B,41,256]`` (cx, cy, w, h, 5 class
  scores, 32 mask coefficients), ``output1 [B,32,256,256]`` (mask prototypes). Internally the
  input is average-pooled 4× to 256 and the network runs there (containers are large); boxes
  are scaled back to 1024-px input coordinates and prototypes upsampled to 256×256.

These are the layouts :func:`pipeline.inference.yolo.decode_detect` / ``decode_segment`` read;
:func:`verify_shapes` and :func:`parity` check the files with onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.evaluate import ort_session
from training.layout import (
    DET_DIST_SCALE,
    DET_IMGSZ,
    DET_STRIDE,
    NUM_MASK_COEFFS,
    SEG_DIST_SCALE,
    SEG_HEAD_STRIDE,
    SEG_IMGSZ,
    SEG_NAMES,
    SEG_NET,
    SEG_POOL,
)
from training.network import DetNet, SegNet, grid_centers

DOC_STRING = "plantpipe default model, built by training/ (python -m training.build)"


class DetExport(nn.Module):
    """DetNet + in-graph decoding to ``[B, 5, N]`` (cx, cy, w, h, sigmoid score)."""

    centers: Tensor

    def __init__(self, net: DetNet) -> None:
        super().__init__()
        self.net = net
        g = DET_IMGSZ // DET_STRIDE
        centers = grid_centers(g, g, DET_STRIDE)
        self.register_buffer("centers", centers.t().unsqueeze(0).contiguous())  # (1,2,N)

    def forward(self, images: Tensor) -> Tensor:
        raw = self.net(images).flatten(2)  # (B,5,N)
        d = torch.exp(raw[:, 1:5].clamp(-5.0, 5.0)) * DET_DIST_SCALE
        cx = self.centers[:, 0:1] + (d[:, 2:3] - d[:, 0:1]) * 0.5
        cy = self.centers[:, 1:2] + (d[:, 3:4] - d[:, 1:2]) * 0.5
        w = d[:, 0:1] + d[:, 2:3]
        h = d[:, 1:2] + d[:, 3:4]
        return torch.cat([cx, cy, w, h, torch.sigmoid(raw[:, 0:1])], dim=1)


class SegExport(nn.Module):
    """Pool 4×, SegNet, decode to ``output0 [B, 41, N]`` and ``output1 [B, 32, 256, 256]``."""

    centers: Tensor

    def __init__(self, net: SegNet) -> None:
        super().__init__()
        self.net = net
        g = SEG_NET // SEG_HEAD_STRIDE
        centers = grid_centers(g, g, SEG_HEAD_STRIDE)
        self.register_buffer("centers", centers.t().unsqueeze(0).contiguous())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        nc = len(SEG_NAMES)
        x = F.avg_pool2d(images, SEG_POOL)
        raw, protos = self.net(x)
        raw = raw.flatten(2)  # (B,41,N)
        d = torch.exp(raw[:, 0:4].clamp(-5.0, 5.0)) * SEG_DIST_SCALE
        s = float(SEG_POOL)
        cx = (self.centers[:, 0:1] + (d[:, 2:3] - d[:, 0:1]) * 0.5) * s
        cy = (self.centers[:, 1:2] + (d[:, 3:4] - d[:, 1:2]) * 0.5) * s
        w = (d[:, 0:1] + d[:, 2:3]) * s
        h = (d[:, 1:2] + d[:, 3:4]) * s
        scores = torch.sigmoid(raw[:, 4 : 4 + nc])
        out0 = torch.cat([cx, cy, w, h, scores, raw[:, 4 + nc : 4 + nc + NUM_MASK_COEFFS]], dim=1)
        out1 = F.interpolate(
            protos, size=(SEG_IMGSZ // 4, SEG_IMGSZ // 4), mode="bilinear", align_corners=False
        )
        return out0, out1


def make_det_export(net: DetNet) -> DetExport:
    return DetExport(net).eval()


def make_seg_export(net: SegNet) -> SegExport:
    return SegExport(net).eval()


def names_literal(names: list[str]) -> str:
    """Class names as Ultralytics writes them into ONNX metadata: ``{0: 'plant'}``."""
    return "{" + ", ".join(f"{i}: {n!r}" for i, n in enumerate(names)) + "}"


def model_metadata(
    common: dict[str, str], description: str, task: str, names: list[str], imgsz: int, stride: int
) -> dict[str, str]:
    """The ONNX ``metadata_props`` (what :func:`pipeline.inference.yolo.resolve_model_spec`
    reads when there is no sidecar)."""
    return {
        **common,
        "description": description,
        "task": task,
        "names": names_literal(names),
        "imgsz": f"[{imgsz}, {imgsz}]",
        "stride": str(stride),
        "batch": "dynamic",
    }


def export_onnx(
    module: nn.Module, imgsz: int, path: Path, outputs: list[str], meta: dict[str, str]
) -> None:
    """Export (opset 17, dynamic batch), replace the metadata, check and save ``path``."""
    import onnx

    dummy = torch.zeros(1, 3, imgsz, imgsz)
    dyn = {"images": {0: "batch"}}
    for o in outputs:
        dyn[o] = {0: "batch"}
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            module,
            (dummy,),
            str(tmp),
            input_names=["images"],
            output_names=outputs,
            dynamic_axes=dyn,
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(tmp))
    tmp.unlink()
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.producer_name = "plantpipe"
    model.doc_string = DOC_STRING
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def parity(module: nn.Module, path: Path, imgsz: int, seed: int) -> float:
    """Max abs difference torch vs onnxruntime on a random input."""
    x = np.random.default_rng(seed).random((2, 3, imgsz, imgsz), dtype=np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x))
    refs = ref if isinstance(ref, tuple) else (ref,)
    got = ort_session(path).run(None, {"images": x})
    return max(float(np.abs(r.numpy() - g).max()) for r, g in zip(refs, got, strict=True))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_sidecar(
    path: Path, names: list[str], imgsz: int, task: str, build: dict[str, Any]
) -> None:
    """``det.json`` / ``seg.json``: what the runtime reads (names, imgsz, task) + provenance."""
    doc = {"names": names, "imgsz": imgsz, "task": task, "build": build}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
