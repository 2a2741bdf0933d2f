"""dsrlb.lab: network-namespace labs of the seed topologies, for tests and for `dsrlb lab NAME`."""

from dsrlb.lab.builders import BUILDERS
from dsrlb.lab.capture import DsrProof, NatProof, ReplyCapture
from dsrlb.lab.core import Lab, LabError, LabProcess, cleanup_stale_labs
from dsrlb.lab.runner import LabRun, run_balancer, run_lab
from dsrlb.lab.topology import LabBalancer, LabTarget, LabTopology, PlannedProcess
from dsrlb.lab.traffic import TrafficReport, drive_http, http_get_in
from dsrlb.lab.verify import Verification, verify_topology

__all__ = [
    "BUILDERS",
    "DsrProof",
    "Lab",
    "LabBalancer",
    "LabError",
    "LabProcess",
    "LabRun",
    "LabTarget",
    "LabTopology",
    "NatProof",
    "PlannedProcess",
    "ReplyCapture",
    "TrafficReport",
    "Verification",
    "cleanup_stale_labs",
    "drive_http",
    "http_get_in",
    "run_balancer",
    "run_lab",
    "verify_topology",
]
