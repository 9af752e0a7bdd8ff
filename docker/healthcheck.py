"""Container health: the server's readiness endpoint answers 200 (exit 0), else exit 1."""

import os
import sys
import urllib.request

port = os.environ.get("DAT_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
