"""M-Package: a base model + per-app candidates at branchpoints + their metrics and latencies."""
from stemcell.package.manifest import (
    SCHEMA_VERSION,
    AppEntry,
    BaseEntry,
    CandidateEntry,
    LatencyEntry,
    Manifest,
)
from stemcell.package.store import MPackage, PackageError, load_package, write_package

__all__ = [
    "SCHEMA_VERSION",
    "AppEntry",
    "BaseEntry",
    "CandidateEntry",
    "LatencyEntry",
    "MPackage",
    "Manifest",
    "PackageError",
    "load_package",
    "write_package",
]
