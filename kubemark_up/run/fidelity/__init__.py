"""How faithful the hollow nodes' traffic is: the apiserver's audit log of the nodes'
own requests (audit_nodes: true), counted per (component, verb, resource,
subresource) and per node and minute, with the watches each node holds open, beside
the reference rates of reference.yaml. See analyse() for the rules."""

from kubemark_up.run.fidelity.analysis import Bucket, Report, WatchBucket, analyse, load_reference

__all__ = ["Bucket", "Report", "WatchBucket", "analyse", "load_reference"]
