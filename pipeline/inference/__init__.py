"""ONNX Runtime inference: YOLO decoders, sessions, the photo analyzer and its process pool.

Modules (import what you need; only ``config`` and ``outputs`` avoid importing onnxruntime):

* ``config``   ``InferenceConfig.from_settings(settings)`` — picklable, sent to pool processes
* ``outputs``  ``AnalysisOutput`` — what one photo's inference returns
* ``yolo``     letterbox, ``decode_detect``, ``decode_segment``, ``ModelSpec``
* ``runtime``  ``create_session`` (provider choice + CPU fallback), ``YoloModel``
* ``analyze``  ``PhotoAnalyzer`` — segmentation → sliced batched detection → band estimation
* ``pool``     ``InferencePool`` — spawn process pool with warm-up and rebuild-and-retry
"""
