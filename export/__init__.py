"""Export DAT to ONNX / TensorRT with our own sampling translations, verified, with a manifest.

    python -m export --help

Library use: :func:`export.pipeline.run_export` carries out one export (asked for with
:class:`export.options.ExportOptions`); the service loads
artifacts only through :class:`runtimes.manifest.Manifest` (``Manifest.load(directory)``), the
module this package writes them with.
Importing this package stays light: the exporter's heavy imports live in its submodules.
"""

from runtimes.manifest import Manifest, read_manifest, write_manifest
from runtimes.manifest_fields import BatchRange, ManifestError

__all__ = ["BatchRange", "Manifest", "ManifestError", "read_manifest", "write_manifest"]
