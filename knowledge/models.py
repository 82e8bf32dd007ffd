"""Knowledge-base documents (uploaded files and crawled pages) and their chunks."""

from __future__ import annotations

import array
import sys
import uuid

from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone

from agentforge_core.models import (
    LegacyRecordModel,
    OrgOwnedModel,
    OrgScopedManager,
    TimestampedModel,
    org_foreign_key,
    org_index,
)
from agentforge_core.tenancy import current_org_id


class DocumentStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    ERROR = "error"


class Document(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    class Source(models.TextChoices):
        UPLOAD = "upload", "Uploaded file"
        WEB = "web", "Crawled web page"

    org = org_foreign_key("documents")
    tool = models.ForeignKey("agents.Tool", on_delete=models.SET_NULL, null=True, blank=True, related_name="documents")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.UPLOAD)
    filename = models.CharField(max_length=500, blank=True, default="", help_text="Stored name under uploads/.")
    original_name = models.CharField(max_length=500, blank=True, default="")
    file_type = models.CharField(max_length=20, blank=True, default="")
    file_size = models.BigIntegerField(default=0)
    url = models.TextField(blank=True, default="")
    title = models.TextField(blank=True, default="")
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=20, choices=DocumentStatus.choices, default=DocumentStatus.PENDING)
    error_message = models.TextField(blank=True, default="")

    class Meta:
        db_table = "documents"
        ordering = ["-created_at"]
        indexes = [org_index("documents", "tool"), org_index("documents", "created_at")]

    def __str__(self):
        return self.original_name or self.title or self.url or str(self.pk)


def pack_embedding(vector) -> bytes:
    """float32, little-endian: the same bytes on all five backends."""
    values = array.array("f", (float(v) for v in vector))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def unpack_embedding(data: bytes) -> list[float]:
    values = array.array("f")
    values.frombytes(bytes(data))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


class DocumentChunkQuerySet(models.QuerySet):
    def with_embeddings(self):
        return self.exclude(embedding__isnull=True)


class DocumentChunk(LegacyRecordModel, OrgOwnedModel):
    """One retrieval chunk: the chunks_index.json entry merged with the document's own copy."""

    org = org_foreign_key("document_chunks")
    tool = models.ForeignKey(
        "agents.Tool", on_delete=models.SET_NULL, null=True, blank=True, related_name="chunks", db_index=False
    )
    document = models.ForeignKey(Document, on_delete=models.CASCADE, null=True, blank=True, related_name="chunks")
    chunk_id = models.CharField(max_length=64, help_text="Legacy chunk id as text (int or chunk-/table-xxxx).")
    chunk_number = models.IntegerField(null=True, blank=True, help_text="Set when the legacy chunk id is an int.")
    text = models.TextField(blank=True, default="")
    source = models.TextField(blank=True, default="")
    chunk_type = models.CharField(max_length=50, blank=True, default="document")
    start_offset = models.IntegerField(null=True, blank=True)
    end_offset = models.IntegerField(null=True, blank=True)
    table_data = models.JSONField(null=True, blank=True)
    is_table = models.BooleanField(default=False)
    rows_count = models.IntegerField(null=True, blank=True)
    in_index = models.BooleanField(default=True, help_text="Present in chunks_index.json.")
    index_position = models.BigIntegerField(null=True, blank=True, help_text="Order in chunks_index.json.")
    embedding = models.BinaryField(null=True, blank=True, help_text="float32 little-endian vector.")
    embedding_dim = models.PositiveIntegerField(null=True, blank=True)
    embedding_model = models.CharField(max_length=100, blank=True, default="")
    vector_version = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="The vector set's version when this embedding was written: searches reload newer rows only.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedManager.from_queryset(DocumentChunkQuerySet)()

    class Meta:
        db_table = "document_chunks"
        ordering = ["index_position"]
        indexes = [
            models.Index(fields=["tool", "document", "chunk_id"], name="doc_chunks_tool_doc_idx"),
            # The search caches' delta (and, by its first two columns, the chunks of one tool): the rows of one set newer than a version.
            org_index("document_chunks", "tool", "vector_version"),
        ]

    def save(self, *args, **kwargs):
        if self.embedding is None:
            return super().save(*args, **kwargs)
        # Stamp the row with its vector set's next version in the same transaction, so
        # every process's search cache picks the new vector up (knowledge.vectors).
        with transaction.atomic(using=kwargs.get("using")):
            self._stamp_vector_version()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "vector_version"}
            super().save(*args, **kwargs)

    def _stamp_vector_version(self):
        if self.embedding_dim is None:
            self.embedding_dim = len(self.embedding) // 4
        # A new row takes the active organization (OrgOwnedModel.save checks it next).
        org_id = self.org_id if self.org_id is not None else current_org_id()
        self.vector_version = VectorSet.bump(org_id, self.tool_id, self.embedding_model, self.embedding_dim)

    def set_embedding(self, vector, model: str = "") -> None:
        self.embedding = pack_embedding(vector)
        self.embedding_dim = len(vector)
        self.embedding_model = model

    def get_embedding(self) -> list[float] | None:
        return None if self.embedding is None else unpack_embedding(self.embedding)


def as_pk(value) -> uuid.UUID:
    """A row's id from the row, its UUID or the UUID as text."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, models.Model):
        return value.pk
    return uuid.UUID(str(value))


# The most hits one search returns. A limit is a number from a caller or a tool's kb_config
# (an imported file): 10**20 overflowed the SQL LIMIT (an error on every search of that tool),
# and the approximate index allocates its candidate arrays from it.
MAX_RESULTS = 1000


def result_limit(limit) -> int:
    """``limit`` as a whole number of hits from 0 to MAX_RESULTS."""
    return max(0, min(int(limit), MAX_RESULTS))


def tool_key(tool_id) -> str:
    """A vector set's tool as text: the tool's UUID, or "" for chunks of no tool."""
    return "" if tool_id is None else str(tool_id)


class VectorSet(OrgOwnedModel):
    """One (organization, tool, embedding model) family of chunk vectors and its version.

    Every write of a vector bumps ``version`` and stamps the chunk with it, in the writer's
    transaction: the update holds this row's lock until commit, so versions are handed out
    in commit order and a search cache that has seen version N has seen every vector up to
    N. Vectors of different models or dimensions never share a set.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = org_foreign_key("vector_sets")
    tool_key = models.CharField(max_length=36, blank=True, default="", help_text="Tool UUID, or empty for no tool.")
    embedding_model = models.CharField(max_length=100, blank=True, default="")
    dimension = models.PositiveIntegerField()
    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "vector_sets"
        constraints = [
            models.UniqueConstraint(
                fields=["org", "tool_key", "embedding_model"], name="vector_sets_org_tool_model_uq"
            ),
        ]

    def __str__(self):
        return f"{self.embedding_model or '(no model)'} / {self.tool_key or '(no tool)'} v{self.version}"

    @classmethod
    def bump(cls, org_id, tool_id, embedding_model: str, dimension: int) -> int:
        """The next version of a set (created on first use); call inside the writer's transaction.

        Raises ValueError when the model already has another dimension in this organization.
        """
        other = (
            cls.all_orgs.filter(org_id=org_id, embedding_model=embedding_model)
            .exclude(dimension=dimension)
            .values_list("dimension", flat=True)
            .first()
        )
        if other is not None:
            raise ValueError(
                f"embedding model {embedding_model!r} has dimension {other} in this organization, got {dimension}"
            )
        key = {"org_id": org_id, "tool_key": tool_key(tool_id), "embedding_model": embedding_model}
        sets = cls.all_orgs.filter(**key)
        if not sets.update(version=F("version") + 1, updated_at=timezone.now()):
            try:
                with transaction.atomic():
                    cls.all_orgs.create(**key, dimension=dimension, version=1)
                return 1
            except IntegrityError:  # another writer created it first: take the next one
                sets.update(version=F("version") + 1, updated_at=timezone.now())
        return sets.values_list("version", flat=True).get()
