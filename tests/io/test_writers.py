"""Joining written pieces: the kernel copy (sendfile) and its user-space fallback give the same bytes."""

import os

import pytest

from s1ray.io import writers


@pytest.mark.parametrize("sendfile", ["kernel", "fails", "partial"])
def test_append_joins_pieces_in_order(tmp_path, monkeypatch, sendfile):
    pieces = []
    for i, text in enumerate(["a" * 3000 + "\n", "", "é\n" * 500, "last line\n"]):
        p = tmp_path / f"piece{i}"
        p.write_text(text, encoding="utf-8")
        pieces.append(p)
    real = os.sendfile
    if sendfile == "fails":
        monkeypatch.setattr(os, "sendfile", lambda *a: (_ for _ in ()).throw(OSError(22, "Invalid argument")))
    elif sendfile == "partial":  # 100 bytes, then an error: the rest is copied in user space, once
        calls = []

        def flaky(out_fd, in_fd, offset, count):
            calls.append(offset)
            if len(calls) > 1:
                raise OSError(22, "Invalid argument")
            return real(out_fd, in_fd, offset, min(count, 100))

        monkeypatch.setattr(os, "sendfile", flaky)
    out = tmp_path / "joined"
    with open(out, "wb", buffering=0) as dst:
        for p in pieces:
            writers._append(p, dst)
    assert out.read_bytes() == b"".join(p.read_bytes() for p in pieces)
