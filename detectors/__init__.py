"""Rules and the correlation engine: pure, synchronous, no I/O, no clock."""

from detectors.engine import Engine, Stage, finding_id, times_only
from detectors.masking import mask_identifier, mask_text
from detectors.rules import CATALOGUE
from detectors.state import EngineState

__all__ = [
    "CATALOGUE",
    "Engine",
    "EngineState",
    "Stage",
    "finding_id",
    "mask_identifier",
    "mask_text",
    "times_only",
]
