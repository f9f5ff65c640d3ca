"""Bad input, without the binaries: one clear line, a non-zero exit, nothing made.
These run in the fast tier (`pytest -m "not cluster"`)."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.cli import assert_one_line_error


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["start", "--nodes", "-1"], {}, 2, "nodes: Input should be greater than or equal to 0"),
        (["start", "--nodes", "many"], {}, 2, "Invalid value for '--nodes'"),
        (["start", "--name", "Not_A_Name"], {}, 2, "name: must be 1-40 lower-case"),
        (["start"], {"NUM_NODES": "lots"}, 2, "(from environment variable NUM_NODES)"),
        (["start", "--provider", "nowhere"], {}, 2, "unknown provider 'nowhere' (known: gce, local, preexisting"),
        (["start", "--config", "/no/such/file.yaml"], {}, 2, "config file /no/such/file.yaml does not exist"),
        (["start"], {"KUBEMARK_UP_APISERVER_EXTRA_ARGS": "not-a-flag"}, 2, "'not-a-flag' is not a --flag"),
        (["status", "--name", "ghost"], {}, 1, "no cluster named 'ghost'"),
        (["pod-for-node", "hollow-node-0", "--name", "ghost"], {}, 1, "no cluster named 'ghost'"),
        (["status", "--output", "yaml"], {}, 2, "--output must be text or json"),
        (["start", "--no-such-option"], {}, 2, "No such option: --no-such-option"),
        # `-n` is no short flag of --name: a count there would become a cluster's name.
        (["start", "-n", "100"], {}, 2, "No such option: -n"),
        (["start", "--name", "100"], {}, 2, "'100' is all digits"),
        (["start", "--bin-dir", "/no/such/folder"], {"KUBEMARK_UP_BIN_DIR": ""}, 2,
         "bin_dir: /no/such/folder is not a folder (from --bin-dir)"),
        (["start", "--provider", "preexisting"], {}, 2, "preexisting.host is required"),
        (["start", "--provider", "preexisting"], {"KUBEMARK_UP_PREEXISTING_HOST": "10.0.0.5:22"}, 2,
         "preexisting.host: a host name or IP address, without a port"),
        (["start"], {"CLOUD_PROVIDER": "pre-existing", "MASTER_IP": "h", "KUBEMARK_UP_PREEXISTING_PORT": "0"}, 2,
         "preexisting.port: Input should be greater than or equal to 1"),
        (["start", "--provider", "preexisting"], {"MASTER_IP": "h", "KUBEMARK_UP_PREEXISTING_REMOTE_ROOT": "srv"},
         2, "preexisting.remote_root: must be an absolute path"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(bare_cli, args, env, code, needle):
    result = bare_cli.run(*args, **env)
    assert_one_line_error(result, code, needle)
    created = sorted(p.name for p in bare_cli.home.glob("*")) if bare_cli.home.exists() else []
    assert created == []


def test_unknown_setting_in_config_file(bare_cli, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("nodes: 2\nnode_count: 3\n")
    result = bare_cli.run("start", "--config", str(config))
    assert_one_line_error(result, 2, "unknown setting 'node_count'", str(config))


def test_stop_of_a_cluster_that_never_existed_is_fine(bare_cli):
    result = bare_cli.run("stop", "--name", "never")
    assert result.returncode == 0 and "nothing to stop" in result.stdout


def test_damaged_state_file_is_one_line(bare_cli):
    folder = bare_cli.home / "corrupt"
    folder.mkdir(parents=True)
    info = {"schema_version": 2, "name": "corrupt", "uid": "0123", "provider": "local", "settings": {}}
    (folder / "cluster.json").write_text(json.dumps(info))
    (folder / "state.json").write_text("{not json")
    result = bare_cli.run("status", "--name", "corrupt")
    assert_one_line_error(result, 1, "state.json is not valid JSON")
    assert os.path.exists(folder / "state.json")


def test_unknown_provider_setting_in_config_file(bare_cli, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("provider: preexisting\npreexisting:\n  host: h\n  hots: typo\n")
    result = bare_cli.run("start", "--config", str(config))
    assert_one_line_error(result, 2, "unknown setting 'preexisting.hots'", str(config))


def test_help_shows_the_defaults(bare_cli):
    result = bare_cli.run("start", "--help")
    assert result.returncode == 0
    assert "[default: 10]" in result.stdout and "[default: local]" in result.stdout


def test_debug_is_taken_after_the_command_too(bare_cli):
    result = bare_cli.run("status", "--name", "ghost", "--debug")
    assert result.returncode == 1
    assert "no cluster named 'ghost'" in result.stderr and "Traceback" in result.stderr


def test_a_home_that_cannot_be_made_is_one_line(bare_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = bare_cli.run("start", KUBEMARK_UP_HOME=str(blocker / "home"))
    assert_one_line_error(result, 2, "set KUBEMARK_UP_HOME to a folder you can write")


def test_run_refuses_bad_input_in_one_line(bare_cli):
    for args, needle in (
        (["run", "nonsense"], "unknown workload 'nonsense' (known: configmap-churn, cr-churn, density, flunder-churn, flunder-watch, "
                                   "http2-baseline, load, watch-storm)"),
        (["run", "density", "--set", "colour=blue"], "workload density has no option 'colour'"),
        (["run", "density", "--set", "colour"], "--set takes KEY=VALUE"),
        (["run", "density", "--slo", "pod_startup=fast"], "not a number of seconds"),
        (["run", "density", "--slo", "latency=1"], "unknown SLO 'latency'"),
        (["run", "density", "--measure", "vibes"], "unknown measurement 'vibes'"),
        (["run", "density", "--pods-per-node", "0"], "pods_per_node"),
        (["run", "density", "--rate", "-1"], "rate"),
    ):
        assert_one_line_error(bare_cli.run(*args), 2, needle)
    assert_one_line_error(bare_cli.run("run", "density", "--name", "ghost"), 1, "no cluster named 'ghost'")
