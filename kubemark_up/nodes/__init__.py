"""How hollow nodes run: one interface (NodeEngine), one module per way of running them.

- processes.py: stock kubemark processes, a hollow kubelet and a hollow proxy per
  node, on a Host (this machine, or the master's host over SSH).
"""

from kubemark_up.nodes.base import NodeEngine, NodeFailure, NodeLocation

__all__ = ["NodeEngine", "NodeFailure", "NodeLocation"]
