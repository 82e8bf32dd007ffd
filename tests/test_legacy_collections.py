"""legacy.format.collections: the one list of legacy files; nothing may be missing from it."""

from __future__ import annotations

import pytest

from legacy.format import mappers
from legacy.format.collections import LEGACY_COLLECTIONS
from legacy.format.mappers import lab, registry
from legacy.format.mappers.base import Mapper
from legacy.migration.importer import import_directory
from tests import legacy_corpus as C
from tests.legacy_helpers import run_export, run_parity


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_mapper_class_serves_a_registered_collection():
    """A mapper written for a new legacy file but left out of LEGACY_COLLECTIONS would be
    neither imported nor exported nor checked: fail here instead."""
    registered = {type(mapper) for mapper in registry.values()}
    mapper_classes = {cls for cls in _subclasses(Mapper) if cls.__module__.startswith(mappers.__name__ + ".")}
    assert mapper_classes - registered == {type(lab)}  # lab/ is a folder of files, not a collection


def test_each_mapper_takes_its_collection_from_the_registry():
    assert list(registry) == list(LEGACY_COLLECTIONS)  # the import order
    for name, mapper in registry.items():
        legacy = LEGACY_COLLECTIONS[name]
        assert (mapper.collection, mapper.file, mapper.container, mapper.stream) == (
            name,
            legacy.file,
            legacy.container,
            legacy.streamed,
        )


@pytest.mark.django_db
def test_every_registered_file_is_imported_exported_and_parity_checked(tmp_path):
    root = tmp_path / "corpus"
    C.write_corpus(root)
    files = {legacy.file for legacy in LEGACY_COLLECTIONS.values()}
    # The corpus has every file AgentForge wrote (tests/legacy_corpus.py): each is a collection.
    assert files == {str(p.relative_to(root)) for p in root.rglob("*.json") if p.parent.name != "lab"}

    assert files <= set(import_directory(root).files), "a legacy file was not imported"

    run_export(tmp_path / "out")
    assert files <= {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.json")}

    code, report = run_parity(root, "--verbosity", "2")
    assert code == 0, report
    for name, legacy in LEGACY_COLLECTIONS.items():
        checked = f"# {name}: 0 difference(s)" in report
        # chunks_index shares its rows with documents[].chunks: parity checks it through them.
        assert checked == (legacy.in_database_store or legacy.container == "object"), name
