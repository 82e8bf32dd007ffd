"""JSON text for the import's hot paths, without ``json.dumps``'s set-up on every call."""

from __future__ import annotations

import json


def json_encoder(**options):
    """``json.JSONEncoder(**options).encode`` with its C encoder built once.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which is most of the cost for
    the small values of an imported row (four JSON columns per audit entry). There is no
    circular-reference check: the values are decoded JSON, or built from it.
    """
    encoder = json.JSONEncoder(check_circular=False, **options)
    make = json.encoder.c_make_encoder
    if make is None or encoder.indent is not None:  # pragma: no cover - no C accelerator
        return encoder.encode
    chunks = make(
        None,
        encoder.default,
        json.encoder.encode_basestring_ascii if encoder.ensure_ascii else json.encoder.encode_basestring,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )
    join = "".join

    def encode(value) -> str:
        return join(chunks(value, 0))

    return encode
