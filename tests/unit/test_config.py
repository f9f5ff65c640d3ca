"""Settings: precedence flags > environment > config file > defaults, the legacy
names, validation, and config/default.yaml documenting every setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kubemark_up import config
from kubemark_up.errors import ConfigError
from kubemark_up.nodes.rootcluster.settings import PodsSettings
from kubemark_up.providers.gce import GCEProvider
from kubemark_up.providers.local import LocalProvider
from kubemark_up.providers.preexisting import PreexistingProvider
from kubemark_up.providers.registry import resolve_settings

DEFAULT_YAML = Path(__file__).parents[2] / "config" / "default.yaml"


BUILT_IN_PROVIDERS = {"local": LocalProvider, "preexisting": PreexistingProvider, "gce": GCEProvider}
# What resolve() gives with nothing set: the defaults, the local provider's own included.
DEFAULTS = config.Settings(provider_settings=LocalProvider.settings_model().model_dump(mode="json"),
                           pods=PodsSettings().model_dump(mode="json"))


def _block(text: str, key: str, indent: str = "") -> str:
    """The comment lines just above `key:` in default.yaml."""
    return text[: text.index(f"\n{indent}{key}:")].rsplit("\n\n", 1)[-1].rsplit(f"\n{indent}{key}:", 1)[0]


def test_default_yaml_documents_every_setting_with_its_default():
    documented = yaml.safe_load(DEFAULT_YAML.read_text())
    sections = {name for name, cls in BUILT_IN_PROVIDERS.items() if cls.settings_model.model_fields}
    assert set(documented) == (set(config.Settings.model_fields) - {"provider_settings"}) | sections
    pods = documented["pods"]
    assert pods == {k: (str(v) if isinstance(v, Path) else v) for k, v in PodsSettings().model_dump().items()}
    for field, names in PodsSettings.legacy_env.items():
        for name in names:
            assert name in _block(text_of_default(), field, indent="  "), f"pods.{field}: legacy {name} undocumented"
    assert resolve_settings(config_file=DEFAULT_YAML, environ={}) == DEFAULTS
    text = DEFAULT_YAML.read_text()
    for field, names in config.LEGACY_ENV.items():
        block = _block(text, field)
        for name in names:
            assert name in block, f"{field}: legacy name {name} is not documented next to it"


def text_of_default() -> str:
    return DEFAULT_YAML.read_text()


@pytest.mark.parametrize("provider", ["local", "preexisting", "gce"])
def test_default_yaml_documents_each_providers_settings(provider):
    cls = BUILT_IN_PROVIDERS[provider]
    section = yaml.safe_load(DEFAULT_YAML.read_text())[provider]
    model = cls.settings_model
    assert set(section) == set(model.model_fields)
    for name, field in model.model_fields.items():
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        documented = section[name]
        if isinstance(default, Path):
            default = str(default)
        assert documented == default, f"{provider}.{name}: documented {documented!r}, default {default!r}"
    text = DEFAULT_YAML.read_text()
    for field, names in cls.legacy_env.items():
        for name in names:
            assert name in _block(text, field, indent="  "), f"{provider}.{field}: legacy {name} undocumented"


def test_provider_settings_precedence(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("provider: preexisting\npreexisting:\n  host: from-file\n  port: 2200\n")
    settings = resolve_settings(config_file=file, environ={})
    assert settings.provider_settings["host"] == "from-file" and settings.provider_settings["port"] == 2200
    settings = resolve_settings(config_file=file, environ={"MASTER_IP": "legacy", "KUBEMARK_UP_PREEXISTING_PORT": "22"})
    assert settings.provider_settings["host"] == "legacy" and settings.provider_settings["port"] == 22
    settings = resolve_settings(config_file=file, environ={"MASTER_IP": "legacy", "KUBEMARK_UP_PREEXISTING_HOST": "new"})
    assert settings.provider_settings["host"] == "new"
    # Another provider's section is left alone when it is not the provider.
    local = resolve_settings(config_file=file, flags={"provider": "local"}, environ={}).provider_settings
    assert local == {"address": "127.0.0.1", "bind_address": None}


def test_precedence(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("nodes: 5\nname: fromfile\nlog_level: --v=3\n")
    settings = resolve_settings(config_file=file, environ={})
    assert (settings.nodes, settings.name, settings.log_level) == (5, "fromfile", "--v=3")
    settings = resolve_settings(config_file=file, environ={"KUBEMARK_UP_NODES": "7", "TEST_CLUSTER_LOG_LEVEL": "--v=4"})
    assert (settings.nodes, settings.name, settings.log_level) == (7, "fromfile", "--v=4")
    settings = resolve_settings(flags={"nodes": 9, "name": None}, config_file=file, environ={"KUBEMARK_UP_NODES": "7"})
    assert (settings.nodes, settings.name) == (9, "fromfile")


def test_legacy_names_most_specific_first():
    assert resolve_settings(environ={"NUM_NODES": "3"}).nodes == 3
    assert resolve_settings(environ={"NUM_NODES": "3", "KUBEMARK_NUM_NODES": "4"}).nodes == 4
    assert resolve_settings(environ={"KUBEMARK_NUM_NODES": "4", "KUBEMARK_UP_NODES": "5"}).nodes == 5
    legacy = resolve_settings(environ={"CLOUD_PROVIDER": "pre-existing", "MASTER_IP": "10.0.0.5", "KUBE_SSH_USER": "kubernetes"})
    assert legacy.provider == "preexisting"
    assert (legacy.provider_settings["host"], legacy.provider_settings["user"]) == ("10.0.0.5", "kubernetes")
    settings = resolve_settings(environ={
        "APISERVER_TEST_ARGS": "--v=9",
        "KUBEMARK_APISERVER_TEST_ARGS": "--profiling=true --max-requests-inflight=10",
        "HOLLOW_KUBELET_TEST_ARGS": "--kube-api-qps=50",
        "ALLOCATE_NODE_CIDRS": "false",
        "ALLOWED_NOTREADY_NODES": "2",
    })
    assert settings.apiserver_extra_args == ["--profiling=true", "--max-requests-inflight=10"]
    assert settings.hollow_kubelet_extra_args == ["--kube-api-qps=50"]
    assert settings.allocate_node_cidrs is False
    assert settings.allowed_not_ready == 2


def test_empty_variables_count_as_unset():
    # The legacy scripts export many variables empty.
    assert resolve_settings(environ={"NUM_NODES": "", "DNS_DOMAIN": ""}) == DEFAULTS
    # An empty KUBEMARK_ variable does not hide the plain one.
    settings = resolve_settings(environ={"KUBEMARK_APISERVER_TEST_ARGS": "", "APISERVER_TEST_ARGS": "--v=3"})
    assert settings.apiserver_extra_args == ["--v=3"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KUBEMARK_UP_NODES": "-1"}, "nodes: Input should be greater than or equal to 0 (from environment variable KUBEMARK_UP_NODES)"),
        ({"SERVICE_CLUSTER_IP_RANGE": "10.0.0.0/33"}, "service_cluster_ip_range: not a network in CIDR form"),
        ({"CLUSTER_IP_RANGE": "10.0.0.0/8"}, "overlap"),
        ({"KUBEMARK_UP_PORT_RANGE": "80-90"}, "port_range: must be LOW-HIGH"),
        ({"TEST_CLUSTER_LOG_LEVEL": "debug"}, "log_level: must look like --v=2"),
        ({"KUBEMARK_UP_KUBERNETES_VERSION": "latest"}, "kubernetes_version: must look like v1.36.3"),
        ({"KUBEMARK_UP_BINARY_SOURCES": "download,ftp"}, "binary_sources"),
        ({"APISERVER_TEST_ARGS": "--a='b"}, "apiserver_extra_args: cannot split APISERVER_TEST_ARGS"),
    ],
)
def test_bad_values_name_the_setting_and_its_source(environ, message):
    with pytest.raises(ConfigError) as caught:
        resolve_settings(environ=environ)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_derived_values():
    assert config.Settings().pod_cidr == "10.64.0.0/14"
    assert config.Settings(nodes=5000).pod_cidr == "10.64.0.0/11"
    assert config.Settings(nodes=16_384).pod_cidr == "10.64.0.0/10"
    with pytest.raises(ValueError, match="holds 16384 node ranges of /24, fewer than 16385 nodes"):
        config.Settings(nodes=16_385)
    assert config.Settings(nodes=16_385, node_cidr_mask_size=25).pod_cidr == "10.64.0.0/10"
    with pytest.raises(ValueError, match="must be longer than"):
        config.Settings(cluster_cidr="10.64.0.0/24")
    assert config.Settings(cluster_cidr="172.16.0.0/12").pod_cidr == "172.16.0.0/12"
    assert config.Settings().first_service_ip == "10.0.0.1"
    assert config.Settings(nodes=10).inflight_limits == (400, 200)
    assert config.Settings(nodes=1000).inflight_limits == (1500, 500)
    assert config.Settings(nodes=3000).inflight_limits == (3000, 1000)
    assert config.Settings(nodes=3000, max_requests_inflight=7).inflight_limits == (7, 1000)
    assert config.Settings(log_level="--v=3").kubelet_log_level == "--v=3"
    assert config.Settings(hollow_proxy_log_level="--v=1").proxy_log_level == "--v=1"


def test_cluster_name_and_home():
    assert config.cluster_name(None, environ={}) == "kubemark"
    assert config.cluster_name(None, environ={"KUBEMARK_UP_NAME": "x1"}) == "x1"
    assert config.cluster_name("y2", environ={"KUBEMARK_UP_NAME": "x1"}) == "y2"
    with pytest.raises(ConfigError):
        config.cluster_name("../etc", environ={})
    assert config.home_dir({"KUBEMARK_UP_HOME": "/srv/km"}) == Path("/srv/km")
    assert re.search(r"\.kubemark-up$", str(config.home_dir({})))


def test_ports_claimed_by_sibling_clusters(tmp_path):
    import json as _json

    from kubemark_up.state import ClusterDir

    one, two = ClusterDir(tmp_path, "one"), ClusterDir(tmp_path, "two")
    one.ensure()
    (one.root / "state.json").write_text(_json.dumps({"ports": {"apiserver": 20003, "hollow-node-0.kubelet": 20010}}))
    assert two.claimed_ports() == {20003, 20010}
    assert one.claimed_ports() == set()


def test_watch_cache_settings_from_the_environment_and_their_check():
    settings = resolve_settings(flags={}, environ={"KUBEMARK_UP_WATCH_CACHE": "false",
                                                  "KUBEMARK_UP_WATCH_CACHE_SIZES": "pods#100"})
    assert settings.watch_cache is False and settings.watch_cache_sizes == "pods#100"
    with pytest.raises(config.ConfigError, match="watch_cache_sizes: 'pods' is not RESOURCE"):
        resolve_settings(flags={}, environ={"KUBEMARK_UP_WATCH_CACHE_SIZES": "pods"})


def test_the_default_node_engine_is_the_fleet():
    """Chosen by measurement (README: the fleet engine): same requests and open watches
    per node as stock kubemark, plus Events and NPD, at a thirtieth of its CPU."""
    settings = resolve_settings(flags={}, environ={})
    assert settings.node_engine == "fleet" and settings.hollow_nodes == "host"


def test_the_pods_section_is_read_by_the_engines_model(tmp_path):
    """pods: lives beside its engine (nodes/rootcluster/settings.py); config reads it with
    the model the provider registry names, by the same names and with the same errors."""
    file = tmp_path / "c.yaml"
    file.write_text("pods:\n  namespace: from-file\n  nodes_per_pod: 7\n")
    settings = resolve_settings(config_file=file, environ={"KUBEMARK_ROOT_KUBECONFIG": "/r/legacy",
                                                           "KUBEMARK_UP_PODS_IMAGE": "r.test/k:1"})
    pods = PodsSettings.of(settings)
    assert (pods.namespace, pods.nodes_per_pod, pods.image, pods.kubeconfig) == ("from-file", 7, "r.test/k:1",
                                                                               Path("/r/legacy"))
    assert PodsSettings.of(config.Settings()) == PodsSettings()
    with pytest.raises(ConfigError, match=r"^pods\.namespace: must be a DNS label .*\(from config file "):
        file.write_text("pods: {namespace: Not_A_Label}\n")
        resolve_settings(config_file=file, environ={})
    with pytest.raises(ConfigError, match=r"^unknown setting 'pods\.imgae' in config file "):
        file.write_text("pods: {imgae: x}\n")
        resolve_settings(config_file=file, environ={})
    with pytest.raises(ConfigError, match=r"^pods\.nodes_per_pod: .*\(from environment variable KUBEMARK_UP_PODS_NODES_PER_POD\)"):
        resolve_settings(environ={"KUBEMARK_UP_PODS_NODES_PER_POD": "0"})
