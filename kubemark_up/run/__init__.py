"""The measuring half: load a running master and measure it.

    model.py       what a run produces and reads (results, metrics, SLOs, the client)
    runner.py      `kubemark-up run`: a workload with its measurements, then the report
    records.py     what a run made, recorded before it is asked for, and its clean-up
    workloads/     what loads the master, one module each
    measurements/  what is measured while it runs, registered by name
    reports/       results on disk, the HTML report, the summary, compare
    fidelity/      `kubemark-up fidelity`: hollow nodes' traffic against a real node's
"""
