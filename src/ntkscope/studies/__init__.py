"""Studies: one configurable experiment per question, ``Config -> run -> Result -> figures``.

Registered studies are listed by `names`; `get` also imports users' studies by module path.
"""

from ntkscope.studies._base import (
    EXECUTION,
    Preset,
    Progress,
    Result,
    Results,
    Study,
    StudyConfig,
    execution_fields,
)
from ntkscope.studies._claims import Claim, Finding
from ntkscope.studies._cost import Cost
from ntkscope.studies._registry import get, names

__all__ = [
    # interface
    "Preset",
    "Progress",
    "Result",
    "Results",
    "Study",
    "StudyConfig",
    "EXECUTION",
    "execution_fields",
    "Cost",
    # published claims
    "Claim",
    "Finding",
    # registry
    "get",
    "names",
]
