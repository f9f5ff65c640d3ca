"""The kubemark-up command line: every command, in the order --help lists them. The
commands are thin (clusters.py, runs.py, tools.py); the cluster's records are
rendered in render.py; app.py holds what they share and main(), the one place that
prints errors and exits."""

from kubemark_up.cli import clusters, runs, tools
from kubemark_up.cli.app import app, main

app.command()(clusters.start)
app.command()(clusters.stop)
app.command()(clusters.status)
app.command("pod-for-node")(clusters.pod_for_node)
app.command()(clusters.logs)
app.command("run")(runs.run_command)
app.command("fidelity")(runs.fidelity_command)
app.command("compare")(runs.compare_command)
app.command("env")(clusters.env_command)
app.add_typer(tools.image_app, name="image")
app.command("binaries")(tools.binaries_command)
app.command("gc")(clusters.gc_command)
app.command("providers")(tools.providers_command)

__all__ = ["app", "main"]
