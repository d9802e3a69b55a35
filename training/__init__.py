"""Training of the default models (build-time only; needs the ``[train]`` extra, PyTorch).

Not part of the runtime: the wheel ships ``pipeline`` and ``workers`` only, and nothing in
them imports this package. From a checkout::

    pip install -e '.[dev,train]'
    python -m training.build --seed 0 --out pipeline/models
    python -m training.compare /tmp/rebuild pipeline/models

Modules, one job each (only ``network``, ``train`` and the torch half of ``export`` import
PyTorch; ``data``, ``evaluate`` and ``compare`` run with numpy, onnx and onnxruntime):

* ``layout``   model geometry: input sizes, strides, class names, held-out seeds;
* ``data``     scenes from :mod:`pipeline.synth`, letterboxed with the runtime's letterbox;
* ``augment``  random training crops / zooms, flips and colour jitter;
* ``network``  the two compact anchor-free CNNs;
* ``train``    assignment, losses and the training loops;
* ``export``   ONNX export in the Ultralytics layouts, metadata, shape and parity checks;
* ``evaluate`` held-out metrics of the exported ONNX files, decoded by the runtime's decoders;
* ``build``    the command line that runs it all and writes the sidecars and report;
* ``compare``  a rebuild against the shipped models, weight by weight.
"""
