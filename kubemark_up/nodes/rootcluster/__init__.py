"""Hollow nodes as pods on a root cluster: what the stock and fleet variants share.

    engine.py   PodNodes: preflight, prepare, start, watch, stop; a variant says the rest
    objects.py  the bodies of what it makes, and the StatefulSet from its template
    api.py      the root cluster's and the kubemark master's clients, one-line errors,
                deleting what carries the cluster's uid
"""
