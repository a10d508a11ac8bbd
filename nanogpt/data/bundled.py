"""Files shipped inside the package, so that the quickstart and everything GPT-2-BPE work on a
machine with no network and no cache (where they come from and their licences:
nanogpt/assets/README.md). Each is gzip-compressed and checked against its sha256 when read."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

from nanogpt.errors import DataError

# name -> sha256 of the uncompressed bytes (the digests their publishers' copies have).
BUNDLED = {
    # tiny Shakespeare, 1,115,394 characters: the file nanoGPT's shakespeare datasets download
    "tinyshakespeare.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    # GPT-2's byte-level BPE ranks as tiktoken's r50k_base file (tiktoken checks the same digest)
    "r50k_base.tiktoken": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
}


def read_bundled(name: str) -> bytes:
    """The uncompressed bytes of a shipped file, after checking their sha256."""
    path = resources.files("nanogpt") / "assets" / f"{name}.gz"
    try:
        payload = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise DataError(f"the packaged copy of {name} cannot be read ({exc}); reinstall nanogpt") from None
    if hashlib.sha256(payload).hexdigest() != BUNDLED[name]:
        raise DataError(f"the packaged copy of {name} is damaged (its sha256 differs); reinstall nanogpt")
    return payload
