"""``onnxruntime`` as onnxruntime-gpu presents it, on a CPU machine: :class:`FakeOnnxRuntime`
lists the CUDA provider, and its InferenceSession records the providers it was given, then
computes on the CPU."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import onnxruntime


class FakeOnnxRuntime:
    """``onnxruntime`` as onnxruntime-gpu presents it: the CUDA provider listed, sessions that
    record the providers they were given (``sessions``) and compute with the real CPU session.
    ``cuda_starts=False``: the session falls back to the CPU provider, as ORT does when CUDA
    fails to initialise."""

    def __init__(self, cuda_starts: bool = True) -> None:
        self.cuda_starts = cuda_starts
        self.sessions: list[dict] = []
        fake = self
        module = types.ModuleType("onnxruntime")
        module.__spec__ = importlib.machinery.ModuleSpec("onnxruntime", None)
        module.__version__ = onnxruntime.__version__
        module.SessionOptions = onnxruntime.SessionOptions
        module.GraphOptimizationLevel = onnxruntime.GraphOptimizationLevel
        module.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]

        class InferenceSession:
            def __init__(self, path_or_bytes, sess_options=None, providers=None, **kwargs) -> None:
                names = [p[0] if isinstance(p, tuple) else p for p in providers or []]
                unknown = set(names) - set(module.get_available_providers())
                if unknown:
                    raise ValueError(f"unknown providers {sorted(unknown)}")
                fake.sessions.append({"path": path_or_bytes, "providers": list(providers or [])})
                self._providers = [n for n in names if fake.cuda_starts or n != "CUDAExecutionProvider"]
                self._session = onnxruntime.InferenceSession(
                    path_or_bytes, sess_options, providers=["CPUExecutionProvider"]
                )

            def get_providers(self) -> list[str]:
                return self._providers

            def __getattr__(self, name: str):  # get_inputs, get_outputs, run
                return getattr(self._session, name)

        module.InferenceSession = InferenceSession
        self.module = module

    def install(self, monkeypatch) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "onnxruntime", self.module)
        return self.module
