"""The fleet node engine: many hollow nodes in one asyncio process, each with its own
identity and its own connections, sending what a real node sends (the traffic model is
../shared/reference/node-traffic.md, section 7):

    client.py   one HTTP/2 client per identity (the node's kubelet, its kube-proxy, its NPD)
    watch.py    a reflector: LIST at resourceVersion 0, then WATCH with bookmarks and a
                300-600 s timeout, resumed from the last version, relisted only on 410
    kubelet.py  registration, lease, node status, the pod lifecycle, node and pod events
    proxy.py    kube-proxy's watches and node-problem-detector's status heartbeat
    process.py  the fleet process (`python -m kubemark_up.nodes.fleet CONFIG`)
    engine.py   the NodeEngine that starts fleet processes on the master's host
"""
