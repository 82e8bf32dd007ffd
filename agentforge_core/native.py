"""The import's per-row work in C (``agentforge_core/_native.c``), when it is built.

``scripts/build-native`` compiles it in place (``scripts/bootstrap-venv`` runs it). Without it,
or with ``AGENTFORGE_NATIVE=0`` in the environment, the pure-Python path runs: the same rows,
about a third more CPU for the whole import (docs/import.md). Both take their kinds from here.
"""

from __future__ import annotations

import os

CopyRow = CanonicalParts = ParamRow = RecordShape = None
json_text_facts = member_count = scan_objects = seal_rows = unpack_rows = utc_timestamp = uuid_from_text = None
if os.environ.get("AGENTFORGE_NATIVE", "1") != "0":
    try:
        from agentforge_core._native import (  # noqa: F401 - re-exported
            CanonicalParts,
            CopyRow,
            ParamRow,
            RecordShape,
            json_text_facts,
            member_count,
            scan_objects,
            seal_rows,
            unpack_rows,
            utc_timestamp,
            uuid_from_text,
        )
    except ImportError:  # not built: the pure-Python path
        pass

# Column kinds of a COPY line (_native.c numbers them the same)
COPY_CALL, COPY_TEXT, COPY_UUID, COPY_TIME, COPY_BOOL, COPY_INT, COPY_IPV4, COPY_CONST, COPY_JSON = range(9)
# Column kinds of a SQLite row's parameters
PARAM_CALL, PARAM_SAME, PARAM_UUID, PARAM_TIME, PARAM_BOOL, PARAM_JSON, PARAM_CONST = range(7)
# Column kinds of the audit chain's canonical JSON
(
    CANON_LITERAL,
    CANON_TIME,
    CANON_JSON,
    CANON_IPV4,
    CANON_BOOL,
    CANON_UUID,
    CANON_INT,
    CANON_OPTIONAL,
    CANON_TEXT,
) = range(9)
# Field kinds of a record's shape (legacy.format.mappers.base.record_shape)
SHAPE_ANY, SHAPE_TEXT, SHAPE_ID, SHAPE_OPT_TEXT, SHAPE_BOOL, SHAPE_LIST = range(6)
