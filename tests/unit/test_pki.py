"""PKI: every certificate verifies with openssl against its CA, subjects and names
are as Kubernetes expects, keys are private, and issuing is idempotent."""

from __future__ import annotations

import ipaddress
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubemark_up import pki

NODES = ["hollow-node-0", "hollow-node-1", "hollow-node-2"]


def make(folder: Path, algorithm: str = "ecdsa-p256", addresses=("127.0.0.1", "localhost")) -> pki.PKI:
    authority = pki.PKI(folder, algorithm)
    pki.ensure_master_pki(authority, addresses=list(addresses), service_ip="10.0.0.1", dns_domain="cluster.local")
    pki.ensure_node_pki(authority, NODES)
    return authority


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject(cert: x509.Certificate) -> tuple[str, tuple[str, ...]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return cn, orgs


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048"])
def test_openssl_verifies_every_certificate(tmp_path, algorithm):
    make(tmp_path, algorithm)
    certs = [p for p in tmp_path.rglob("*.crt") if not p.name.endswith("ca.crt")]
    assert len(certs) == 8 + 2 + len(NODES)  # master, proxy and node-problem-detector, nodes
    for cert in certs:
        ca = tmp_path / "ca.crt"
        if cert.parent.name == "etcd" or "etcd-client" in cert.name:
            ca = tmp_path / "etcd" / "ca.crt"
        elif cert.name == "front-proxy-client.crt":
            ca = tmp_path / "front-proxy-ca.crt"
        result = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)], capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), (cert, result.stdout, result.stderr)
        key_type = rsa.RSAPublicKey if algorithm == "rsa-2048" else ec.EllipticCurvePublicKey
        assert isinstance(load(cert).public_key(), key_type)


def test_etcd_and_the_front_proxy_have_their_own_cas(tmp_path):
    make(tmp_path)
    # A cluster identity (a hollow node's) must not be accepted by etcd, nor pass for the
    # front proxy whose headers the apiserver believes.
    for ca in ("etcd/ca.crt", "front-proxy-ca.crt"):
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / ca), str(tmp_path / "nodes" / "hollow-node-0.crt")],
            capture_output=True, text=True,
        )
        assert result.returncode != 0, ca


def test_apiserver_serving_names(tmp_path):
    make(tmp_path, addresses=("127.0.0.1", "localhost", "203.0.113.7", "master.example"))
    cert = load(tmp_path / "apiserver.crt")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "localhost", "master.example", "kubernetes", "kubernetes.default",
        "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
    }
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "203.0.113.7", "10.0.0.1")
    }
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_subjects(tmp_path):
    make(tmp_path)
    expected = {
        "admin": ("kubernetes-admin", ("system:masters",)),
        "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
        "controller-manager": ("system:kube-controller-manager", ()),
        "scheduler": ("system:kube-scheduler", ()),
        "kube-proxy": ("system:kube-proxy", ()),
        "apiserver-etcd-client": ("kube-apiserver-etcd-client", ()),
        "front-proxy-client": ("front-proxy-client", ()),
        **{f"nodes/{n}": (f"system:node:{n}", ("system:nodes",)) for n in NODES},
    }
    for stem, want in expected.items():
        cert = load(tmp_path / f"{stem}.crt")
        assert subject(cert) == want, stem
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert usages == [ExtendedKeyUsageOID.CLIENT_AUTH], stem
    ca = load(tmp_path / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_modes_keys_0600_folders_0700(tmp_path):
    folder = tmp_path / "pki"
    make(folder)
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif path.suffix == ".key":
            assert mode == 0o600, path
    assert len(list(folder.rglob("*.key"))) == 3 + 1 + 8 + 2 + len(NODES)  # CAs, sa, master, proxy, npd, nodes


def test_service_account_key_is_rsa_2048(tmp_path):
    from cryptography.hazmat.primitives import serialization

    make(tmp_path)
    key = serialization.load_pem_private_key((tmp_path / "sa.key").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    public = serialization.load_pem_public_key((tmp_path / "sa.pub").read_bytes())
    assert public.public_numbers() == key.public_key().public_numbers()


def test_issuing_is_idempotent_and_follows_changes(tmp_path):
    make(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.crt")}
    make(tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.crt")} == before
    # A new master address: only the certificates naming it are reissued.
    make(tmp_path, addresses=("127.0.0.1", "localhost", "198.51.100.4"))
    changed = {p.relative_to(tmp_path).as_posix() for p in before if p.read_bytes() != before[p]}
    # etcd listens on loopback whatever the master's address: its certificate stays.
    assert changed == {"apiserver.crt"}
