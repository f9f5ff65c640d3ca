"""Stock kubemark hollow nodes: a hollow kubelet and a hollow kube-proxy per node.

    args.py  their command lines, one builder per morph
    host.py  as processes on the master's host (hollow_nodes: host)
    pods.py  as pods on a root cluster (hollow_nodes: pods)
"""
