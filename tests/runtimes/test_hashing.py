from __future__ import annotations

import hashlib

from runtimes import hashing


def test_sha256_file_reads_in_chunks(tmp_path, monkeypatch):
    data = bytes(range(256)) * 40
    (tmp_path / "f").write_bytes(data)
    monkeypatch.setattr(hashing, "CHUNK", 1000)  # several chunks, the last one short
    assert hashing.sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert hashing.sha256_file(str(tmp_path / "empty")) == hashlib.sha256(b"").hexdigest()
