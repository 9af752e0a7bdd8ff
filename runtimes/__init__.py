"""What runs an exported model, shared by the exporter (which verifies its artifacts with it)
and the server (which serves them with it), so both run the same code:

- :mod:`runtimes.manifest`: the typed manifest beside the artifacts, written and read here
  (its field types in :mod:`runtimes.manifest_fields`);
- :mod:`runtimes.onnxruntime`: the one way an ONNX Runtime session is made;
- :mod:`runtimes.tensorrt`: the one way a TensorRT engine is loaded and executed;
- :mod:`runtimes.hashing`: file hashes (manifests, weights, cache keys).

Imports only ``models``; ``tensorrt`` and ``onnxruntime`` are imported when first used.
"""
