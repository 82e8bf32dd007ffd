"""Knowledge-base documents (uploaded files and crawled pages) and their chunks."""

from __future__ import annotations

import array
import math
import sys

from django.db import models

from accounts.models import LegacyRecordModel, OrgOwnedModel, OrgScopedManager, TimestampedModel, org_foreign_key, org_index


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
    tool = models.ForeignKey(
        "agents.Tool", on_delete=models.SET_NULL, null=True, blank=True, related_name="documents"
    )
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


def cosine_similarity(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class DocumentChunkQuerySet(models.QuerySet):
    def with_embeddings(self):
        return self.exclude(embedding__isnull=True)

    def most_similar(self, vector, limit: int = 5):
        """Brute-force cosine search, portable to every backend; returns (score, chunk) pairs."""
        scored = [
            (cosine_similarity(vector, unpack_embedding(chunk.embedding)), chunk)
            for chunk in self.with_embeddings().filter(embedding_dim=len(vector))
        ]
        scored.sort(key=lambda pair: pair[0], reverse=True)
        return scored[:limit]


class DocumentChunk(LegacyRecordModel, OrgOwnedModel):
    """One retrieval chunk: the chunks_index.json entry merged with the document's own copy."""

    org = org_foreign_key("document_chunks")
    tool = models.ForeignKey("agents.Tool", on_delete=models.SET_NULL, null=True, blank=True, related_name="chunks")
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
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedManager.from_queryset(DocumentChunkQuerySet)()

    class Meta:
        db_table = "document_chunks"
        ordering = ["index_position"]
        indexes = [
            models.Index(fields=["tool", "document", "chunk_id"], name="doc_chunks_tool_doc_idx"),
            org_index("document_chunks", "tool"),
        ]

    def set_embedding(self, vector, model: str = "") -> None:
        self.embedding = pack_embedding(vector)
        self.embedding_dim = len(vector)
        self.embedding_model = model

    def get_embedding(self) -> list[float] | None:
        return None if self.embedding is None else unpack_embedding(self.embedding)
