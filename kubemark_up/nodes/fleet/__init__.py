"""Fleet hollow nodes: many hollow nodes in one kubemark-fleet process (the Go
program in kubemark_up/fleet, built by gobuild/), each with its own identity and its
own connections, sending what a real node sends.

    host.py  fleet processes on the master's host (hollow_nodes: host)
    pods.py  fleet pods on a root cluster (hollow_nodes: pods)
"""
