"""Server-side camera ingestion (pull cameras): pure policies the `CameraIngest` actor runs.

`sources` checks where a camera's stream comes from (scheme, allowed folders, FFmpeg options),
`policy` decides when to reconnect and which state a camera is in, `slot` keeps only the newest
frame of a stream, `schedule` when frames go to executors (one batch per interval), `batch` what goes
(`PulledBatch`: one uint8 array for all the cameras of one call). No Ray, no threads started here: the actor shell owns those.
"""
from stemcell.ingest.batch import PulledBatch
from stemcell.ingest.policy import Backoff, CameraHealth, HealthSnapshot, State
from stemcell.ingest.slot import NewestFrameSlot
from stemcell.ingest.sources import (
           ForbiddenSource,
           Source,
           UnsupportedSource,
           check_source,
)

__all__ = ["Backoff", "CameraHealth", "ForbiddenSource", "HealthSnapshot", "NewestFrameSlot", "PulledBatch", "Source",
           "State", "UnsupportedSource", "check_source"]
