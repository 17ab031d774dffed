"""Deployment: export to a runtime's file, int8, the memory a device needs, the inference benchmark, predict.

    export.export(weights, "model.onnx", "onnx")                 # or "openvino", "tflite", "pte"; BN folded
    export.export(weights, "m.int8.tflite", "tflite", "int8", calibration=images)   # full int8, int8 in/out
    backends.load_file("m.int8.tflite").run(batch)               # any exported file in its runtime
    bench.bench_infer(weights, 227)                              # every installed engine side by side
    memory.measure(model, 96)                                    # weights, peak activations, arena (int8)
    predict.Predictor(weights=...).top(image, 5)

ONNX Runtime needs the ``deploy`` extra; OpenVINO, LiteRT and ExecuTorch the ``edge`` extra.
Weights are read through the one loader.
"""
