"""Index administration: reading a stored document, adding and deleting documents, and the
storage errors a write can meet. No web-framework code; ``errors.py`` maps these errors to
HTTP statuses. Each write goes through :meth:`finerank.Index.edit` and the new generation is
handed to the :class:`~finerank.server.backend.Service`, which serves it."""

from __future__ import annotations

import errno
from collections.abc import Sequence

from ..errors import CorpusError, FinerankError, NotFoundError
from ..index import Index
from ..registry import encoder_of
from ..types import Document
from .backend import InvalidRequest, Service


class IndexNotWritable(FinerankError):
    """The served index's folder cannot be written (permissions, a read-only disk): 503."""

    field = "index"


class StorageFull(IndexNotWritable):
    """No space left where the index is written: 507."""


def unwritable(err: OSError, message: str) -> IndexNotWritable:
    """A failed write as the server answers it: 507 when the disk is full, else 503."""
    kind = StorageFull if err.errno in (errno.ENOSPC, errno.EDQUOT) else IndexNotWritable
    return kind(f"{message} ({err.strerror or err})")


class Admin:
    """The writes (and reads by id) on the index that ``service`` serves."""

    def __init__(self, service: Service):
        self.service = service
        self.encoder = service.encoder  # loaded at the first addition to an index with vectors if the service has none

    def document(self, doc_id: str) -> Document:
        index = self.service.served().index
        try:
            return index.documents[index.documents.position(doc_id)]
        except KeyError as err:
            raise NotFoundError(f"id: {err.args[0]}", "id") from None

    def upsert(self, documents: Sequence[Document]) -> int:
        """Add or replace documents by id; the new index is saved atomically, then served."""
        return self._update(add=documents)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id; an unknown id deletes nothing and raises NotFoundError."""
        return self._update(delete=ids)

    def _update(self, **change) -> int:
        state = self.service.served()
        if self.encoder is None and state.index.vectors is not None and change.get("add"):
            self.encoder = encoder_of(state.index)
        path = self.service.index_path
        try:
            # load, change and save under the index's writer lock: the latest generation on
            # disk (another process's update included) is the one changed
            _, new = Index.edit(path, **change, encoder=self.encoder)
        except CorpusError as err:
            raise InvalidRequest("ids" if "delete" in change else "documents", str(err)) from None
        except OSError as err:  # nothing was published: the index on disk is as it was
            raise unwritable(err, f"the index {path} cannot be written; nothing was changed") from None
        self.service.publish(new)
        return len(new)
