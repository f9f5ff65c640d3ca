"""How hollow nodes run: one interface (NodeEngine, base.py), and an engine for each
pair of the settings the user types, found by registry.engine_for:

    hollow_nodes  node_engine
    host          kubemark     kubemark/host.py  stock kubemark processes, a hollow
                                                 kubelet and a hollow proxy per node,
                                                 on the master's host
    host          fleet        fleet/host.py     kubemark-fleet processes (the Go
                                                 program in kubemark_up/fleet), many
                                                 nodes each, on the master's host
    pods          kubemark     kubemark/pods.py  a pod per node on a root cluster
    pods          fleet        fleet/pods.py     fleet pods on a root cluster, many
                                                 nodes each

The pods engines share rootcluster/ (the engine's common part, the objects it makes,
the two clusters' clients); kubemark/args.py holds the stock kubemark flags.
"""

from kubemark_up.nodes.base import NodeEngine, NodeFailure, NodeLocation, NodeSite

__all__ = ["NodeEngine", "NodeFailure", "NodeLocation", "NodeSite"]
