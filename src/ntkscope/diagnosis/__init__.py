"""`ntkscope.diagnose`: is this network in the kernel regime? (measurements, verdict)."""

from ntkscope.diagnosis.inputs import build, load_factory
from ntkscope.diagnosis.run import Diagnosis, diagnose
from ntkscope.diagnosis.verdict import Criterion, Verdict, describe

__all__ = ["Criterion", "Diagnosis", "Verdict", "build", "describe", "diagnose", "load_factory"]
