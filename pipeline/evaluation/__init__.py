"""Accuracy on held-out synthetic scenes: detection AP50 and count error.

Modules: ``metrics`` (AP50, count error, duplicates), ``scenes`` (scenes through the
analyzer, in parallel processes), ``report`` (evaluation sets and the markdown document).

    plantpipe evaluate --scenes 50 --seed 100000 [--size 2000x1500] [--variant wide]

Each scene is generated (seeded), JPEG-encoded, and analysed by the same ``PhotoAnalyzer``
the gpu workers run (segmentation, sliced detection, band estimation). ``variant`` picks the
generator: ``classic`` (the scenes the default models were trained on) or ``wide`` (what
real nurseries vary: touching and overlapping trays, plain dark trays, plant size
independent of the photo up to ~200 px, colour casts, blur, JPEG quality, perspective; see
``pipeline.synth``). Reported:

* detection AP50 — all-point interpolated average precision at IoU 0.5 over every plant;
* count error of detected + estimated vs the true plant count per scene (MAPE and MAE), the
  same for detection alone, and how much band estimation lowers the error; the worst scene;
* duplicates — detections that count a plant already counted (see :func:`metrics.count_duplicates`),
  as a share of all plants.
"""
