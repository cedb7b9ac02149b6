"""Edge client of AMS-style model streaming: local student inference, ASR-rate sample uploads,
sparse model updates, and byte accounting, over a transport (HTTP or in-process)."""
from stemcell.edge.client import EdgeClient, EdgeCounters
from stemcell.edge.http import HttpTransport
from stemcell.edge.transport import Advice, InProcessTransport, LearningTransport, ModelPayload

__all__ = [
    "Advice",
    "EdgeClient",
    "EdgeCounters",
    "HttpTransport",
    "InProcessTransport",
    "LearningTransport",
    "ModelPayload",
]
