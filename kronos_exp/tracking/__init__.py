"""MLflow tracking: runs, fingerprints and the registry behind skip_existing."""
from .fingerprint import fingerprint, folder_digests
from .registry import RegisteredCheckpoint, Registry
from .runs import PARENT_RUN_ENV, Tracker, TrackingUnavailable, flatten
from .uris import default_tracking_uri

__all__ = ["fingerprint", "folder_digests", "RegisteredCheckpoint", "Registry", "PARENT_RUN_ENV", "Tracker", "TrackingUnavailable",
           "default_tracking_uri", "flatten"]
