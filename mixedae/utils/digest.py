"""Checksums of downloaded files, checked against what a release publishes.

Releases publish a prefix of a digest rather than the whole: MAE's README an md5 prefix of 6
hex digits, OpenMMLab's model zoo the first 8 hex digits of the sha256 in each file name
(``..._20220825-f7569ca2.pth``); iBOT publishes none. :func:`file_digests` computes both in
one pass, :func:`check_digests` compares them with the prefixes given.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Dict, Optional

from .errors import InvalidInputError, MissingInputError

ALGORITHMS = ('sha256', 'md5')
#: the shortest prefix accepted (MAE publishes 6 digits of the md5)
MIN_PREFIX = 6


def file_digests(path: str, chunk: int = 1 << 20) -> Dict[str, str]:
    """Hex ``sha256`` and ``md5`` of the file at ``path``, read once in ``chunk``-byte blocks."""
    if not os.path.isfile(path):
        raise MissingInputError(f'checkpoint file not found: {path}')
    hashes = {name: hashlib.new(name) for name in ALGORITHMS}
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def check_digests(path: str, digests: Dict[str, str], expected: Dict[str, Optional[str]]
                  ) -> None:
    """Raise an :class:`InvalidInputError` naming ``path`` when a digest does not start with
    its expected prefix (``None``: not checked) or a prefix is not hex of >= 6 digits."""
    for name, prefix in expected.items():
        if prefix is None:
            continue
        wanted = prefix.lower()
        if not re.fullmatch(r'[0-9a-f]{%d,}' % MIN_PREFIX, wanted):
            raise InvalidInputError(f'--{name} {prefix!r}: give at least {MIN_PREFIX} hex '
                                    f'digits of the published {name}')
        if not digests[name].startswith(wanted):
            raise InvalidInputError(
                f'{path}: {name} {digests[name]} does not start with the published {wanted}: '
                'not the released file (an incomplete or corrupted download, or another '
                'release); download it again (docs/checkpoints.md)')
