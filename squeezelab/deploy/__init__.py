"""Deployment: ONNX export, int8 quantisation, the inference benchmark and predict.

    export.export_onnx(weights, "model.onnx")          # BN folded, dynamic batch, preset in metadata
    quantize.quantize_int8("model.onnx", "model.int8.onnx", calibration)   # ORT static QDQ
    bench.bench_infer(net, 227, onnx_fp32=..., onnx_int8=...)            # engines side by side
    predict.Predictor(weights=...).top(image, 5)

Needs the ``deploy`` extra (onnx, onnxruntime, onnxscript). Weights are read through the one loader.
"""
