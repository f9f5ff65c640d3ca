"""How faithful the hollow nodes' traffic is: the apiserver's audit log of the nodes'
own requests (audit_nodes: true), counted per (component, verb, resource,
subresource) per node and minute and per pod lifecycle, with the watches and
connections each node holds open and the codes it got, beside a real node's
(reference.yaml). audit.py reads the log, analysis.py judges it (its rules),
measure.py waits out the window on a live cluster."""

from kubemark_up.run.fidelity.analysis import Bucket, Report, WatchBucket, analyse
from kubemark_up.run.fidelity.reference import Reference, load_reference

__all__ = ["Bucket", "Reference", "Report", "WatchBucket", "analyse", "load_reference"]
