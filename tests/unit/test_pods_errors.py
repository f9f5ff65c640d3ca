"""How the pods engine words what went wrong: image pulls (once per image, the cause in
a few words, whether retrying can help), what crane says of an image it cannot read,
and why a cluster did not answer (from real sockets: a closed port, a silent one, one
that does not speak TLS)."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
from kubernetes import client

from kubemark_up import image
from kubemark_up.nodes.registry import engine_for
from kubemark_up.nodes.rootcluster import api, pulls
from tests.unit.test_nodes import _ctx

IMAGE = "127.0.0.1:5000/kubemark:no-such-tag"
# What the kubelet (v1.36) and containerd 1.6 say of a tag the registry lacks.
NOT_FOUND = (f'failed to pull and unpack image "{IMAGE}": failed to resolve reference "{IMAGE}": '
             f"{IMAGE}: not found")
ERR_IMAGE_PULL = f"rpc error: code = NotFound desc = {NOT_FOUND}"
BACK_OFF = f'Back-off pulling image "{IMAGE}": ErrImagePull: {ERR_IMAGE_PULL}'
REFUSED = (f'rpc error: code = Unknown desc = failed to pull and unpack image "{IMAGE}": failed to resolve '
           f'reference "{IMAGE}": failed to do request: Head "http://127.0.0.1:5000/v2/kubemark/manifests/'
           'no-such-tag": dial tcp 127.0.0.1:5000: connect: connection refused')


def _pod(*containers: tuple[str, str, str]) -> dict:
    return {"metadata": {"name": "hollow-node-0"}, "status": {"phase": "Pending", "containerStatuses": [
        {"name": name, "image": IMAGE, "state": {"waiting": {"reason": reason, "message": message}}}
        for name, reason, message in containers]}}


@pytest.mark.parametrize(("message", "cause"), [
    (ERR_IMAGE_PULL, "not found"),
    (BACK_OFF, "not found"),
    (REFUSED, "connection refused"),
    ("rpc error: code = Unknown desc = failed to pull and unpack image: failed to authorize: failed to fetch "
     "anonymous token: unexpected status: 401 Unauthorized", "401 Unauthorized"),
    (f'Back-off pulling image "{IMAGE}"', ""),  # a kubelet that does not repeat the cause
])
def test_a_pull_error_is_its_cause_in_a_few_words(message, cause):
    assert pulls.pull_cause(message) == cause


def test_a_pod_whose_containers_share_an_image_has_one_pull_failure():
    pod = _pod(("hollow-kubelet", "ErrImagePull", ERR_IMAGE_PULL), ("hollow-proxy", "ImagePullBackOff", BACK_OFF),
               ("hollow-node-problem-detector", "ImagePullBackOff", f'Back-off pulling image "{IMAGE}"'))
    (failure,) = pulls.pull_failures(pod)
    assert failure.line() == f"cannot pull {IMAGE}: not found"
    assert failure.permanent  # the registry said so: pulling again cannot help
    assert failure.containers == ("hollow-kubelet", "hollow-proxy", "hollow-node-problem-detector")
    assert failure.message in (ERR_IMAGE_PULL, BACK_OFF)


def test_a_registry_out_of_reach_is_not_a_permanent_failure():
    (failure,) = pulls.pull_failures(_pod(("hollow-fleet", "ErrImagePull", REFUSED)))
    assert failure.line() == f"cannot pull {IMAGE}: connection refused"
    assert not failure.permanent  # the registry may come back: wait


def test_a_malformed_name_is_permanent_and_says_so():
    (failure,) = pulls.pull_failures(_pod(("hollow-fleet", "InvalidImageName",
                                           'couldn\'t parse image name "Bad:Name": invalid reference format')))
    assert failure.permanent and failure.line() == f"cannot pull {IMAGE}: invalid reference format"


def test_running_and_crash_looping_containers_are_no_pull_failures():
    pod = _pod(("a", "CrashLoopBackOff", "back-off 10s restarting failed container"))
    pod["status"]["containerStatuses"].append({"name": "b", "image": IMAGE, "state": {"running": {}}})
    assert pulls.pull_failures(pod) == []


# What crane (go-containerregistry v0.22.1) writes on stderr when `crane digest` fails.
CRANE_NOT_FOUND = (
    "2026/12/07 14:08:02 HEAD request failed, falling back on GET: HEAD http://127.0.0.1:15999/v2/kubemark/manifests/"
    "nope: unexpected status code 404 Not Found (HEAD responses have no body, use GET for details)\n"
    "Error: GET http://127.0.0.1:15999/v2/kubemark/manifests/nope: MANIFEST_UNKNOWN: manifest unknown; "
    "map[Tag:nope]\n")
CRANE_NO_REPOSITORY = ("Error: GET http://127.0.0.1:15999/v2/other/manifests/v1: NAME_UNKNOWN: repository name not "
                       "known to registry; map[name:other]\n")
CRANE_REFUSED = (
    'Error: Get "https://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused; '
    'Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused\n')
CRANE_UNAUTHORIZED = ("Error: GET https://registry.example.com/v2/kubemark/manifests/v1: UNAUTHORIZED: "
                      "authentication required; [map[Action:pull Class: Name:kubemark Type:repository]]\n")


@pytest.mark.parametrize(("stderr", "missing", "why"), [
    (CRANE_NOT_FOUND, True, "not found"),
    (CRANE_NO_REPOSITORY, True, "not found"),
    (CRANE_REFUSED, False, "connection refused"),
    (CRANE_UNAUTHORIZED, False, "authentication required"),  # the root cluster may have credentials
    ("", False, "crane said nothing"),
])
def test_crane_failures_tell_a_missing_image_from_one_out_of_reach(stderr, missing, why):
    found = image.classify_failure(stderr)
    assert (found.digest, found.missing, found.why) == (None, missing, why)


def _unreachable(server: str, timeout: float = 5) -> str:
    configuration = client.Configuration()
    configuration.host, configuration.verify_ssl = server, False
    configuration.retries = 0
    try:
        client.CoreV1Api(client.ApiClient(configuration)).list_namespace(_request_timeout=timeout)
    except api.TRANSIENT as exc:
        return api.unreachable(exc)
    raise AssertionError("the call was answered")


def test_a_closed_port_is_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert _unreachable(f"https://127.0.0.1:{port}") == "connection refused"


def test_a_silent_port_is_timed_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        assert _unreachable(f"https://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5) == "timed out"


def test_a_port_without_tls_is_a_tls_failure():
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *args: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _unreachable(f"https://127.0.0.1:{server.server_port}").startswith("TLS: ")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("engine", ["kubemark", "fleet"])
def test_the_engine_fails_a_pod_whose_image_is_not_found_at_once_and_says_so_once(engine, tmp_path):
    ctx, _ = _ctx(tmp_path, engine)
    pods = engine_for("pods", engine).build(ctx)
    name = "hollow-node-1" if engine == "kubemark" else "hollow-fleet-0"
    pod = _pod(("a", "ErrImagePull", ERR_IMAGE_PULL), ("b", "ImagePullBackOff", BACK_OFF),
               ("c", "ImagePullBackOff", BACK_OFF))
    pod["metadata"]["name"] = name
    waiting = _pod(("a", "ErrImagePull", REFUSED))
    pods._pods = lambda ctx: [pod, waiting]
    failed = pods.failed(ctx)
    nodes = ["hollow-node-1"] if engine == "kubemark" else ["hollow-node-0", "hollow-node-1", "hollow-node-2"]
    assert sorted(failed) == nodes  # not hollow-node-0's pod (kubemark): its registry may come back
    failure = failed["hollow-node-1"]
    assert failure.why == f"the root cluster cannot pull {IMAGE}: not found"
    assert failure.log == f"pod hollow/{name} container a"
    assert failure.log_tail in (ERR_IMAGE_PULL, BACK_OFF)
    diagnosis = pods.diagnose(ctx).splitlines()
    assert diagnosis[1:] == [f"pod {name} (Pending): cannot pull {IMAGE}: not found",
                             f"pod hollow-node-0 (Pending): cannot pull {IMAGE}: connection refused"]
