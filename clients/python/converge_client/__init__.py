"""Python client of converge serve (standard library only).

See clients/python/README.md and docs/clients.md.
"""

from ._http import Backoff
from .client import (AckResult, Client, Delivery, DeliveryStream, ExtendResult, Lease, Nack,
                     NackResult, PublishResult)
from .consumer import Consumer, ConsumerStats, PermanentFailure
from .errors import *  # noqa: F401,F403 - every error class is part of the API
from .errors import ERROR_CLASSES, error_from_reply
from .events import CloudEvent, event_identity, new_event_id
from .inbox import PostgresInbox, SqliteInbox
from .outbox import PostgresOutbox, PostgresWalOutbox, SqliteOutbox, wal_emit_params
from .push import PushDelivery, PushRequestError, read_push, verify_push_signature
from .saga import (SagaCommand, SagaParticipant, SagaReply, Sagas, SqliteSagaLedger, StepFailed,
                   StepRetry)
from .store import ABSENT, Collection, Document, Store, WriteResult

__version__ = "0.1.0"

__all__ = [
    "ABSENT", "AckResult", "Backoff", "Client", "CloudEvent", "Collection", "Consumer",
    "ConsumerStats", "Delivery", "DeliveryStream", "Document", "ERROR_CLASSES", "ExtendResult",
    "Lease", "Nack", "NackResult", "PermanentFailure", "PostgresInbox", "PostgresOutbox", "PostgresWalOutbox", "PublishResult",
    "PushDelivery", "PushRequestError", "SagaCommand",
    "SagaParticipant", "SagaReply", "Sagas", "SqliteInbox", "SqliteOutbox", "SqliteSagaLedger",
    "StepFailed", "StepRetry", "Store", "WriteResult", "error_from_reply", "event_identity",
    "new_event_id", "read_push", "verify_push_signature", "wal_emit_params",
]
