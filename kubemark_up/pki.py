"""Certificates and keys for a kubemark cluster, with the cryptography package.

Layout of a cluster's pki/ folder (0700; keys 0600):

    ca.crt, ca.key                          the cluster CA (CN=kubernetes)
    apiserver.crt                           kube-apiserver serving certificate
    apiserver-kubelet-client.crt            kube-apiserver -> kubelet (O=system:masters)
    admin.crt                               kubectl (CN=kubernetes-admin, O=system:masters)
    controller-manager.crt, scheduler.crt   CN=system:kube-controller-manager / system:kube-scheduler
    kube-proxy.crt                          CN=system:kube-proxy, bound to system:node-proxier by default
    nodes/hollow-node-<i>.crt               CN=system:node:hollow-node-<i>, O=system:nodes
    sa.key, sa.pub                          service-account token signing pair (RSA-2048)
    front-proxy-ca.crt, front-proxy-client.crt  the aggregation layer's requestheader CA and
                                            the apiserver's client to aggregated APIs
    etcd/ca.crt, etcd/server.crt            a separate CA for etcd, so that no cluster identity
    apiserver-etcd-client.crt                 (a hollow node's, say) can talk to etcd directly

Each .crt has its .key beside it. Issuing is idempotent: a certificate that is
already there, signed by this CA, for the same subject and names, is kept.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
_CLOCK_SKEW = dt.timedelta(minutes=5)


def write_secret(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, in a folder only its owner can enter."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)


@dataclass(frozen=True)
class Identity:
    """What one certificate says: who it is and what it may be used for."""

    stem: str  # file name without .crt/.key, relative to the pki folder
    common_name: str
    organizations: tuple[str, ...] = ()
    client: bool = True
    server: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    ca: str = "ca"  # stem of the signing CA


@dataclass
class PKI:
    folder: Path
    algorithm: str = "ecdsa-p256"
    _cas: dict[str, tuple[x509.Certificate, object]] = field(default_factory=dict, repr=False)

    def cert_path(self, stem: str) -> Path:
        return self.folder / f"{stem}.crt"

    def key_path(self, stem: str) -> Path:
        return self.folder / f"{stem}.key"

    def _new_key(self):
        if self.algorithm == "rsa-2048":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    @staticmethod
    def _key_pem(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def ensure_ca(self, stem: str = "ca", common_name: str = "kubernetes") -> x509.Certificate:
        """Load the CA at stem, or make a self-signed one."""
        if stem in self._cas:
            return self._cas[stem][0]
        cert_path, key_path = self.cert_path(stem), self.key_path(stem)
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        else:
            key = self._new_key()
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            now = dt.datetime.now(dt.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _CLOCK_SKEW)
                .not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )
            write_secret(key_path, self._key_pem(key))
            _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        self._cas[stem] = (cert, key)
        return cert

    def issue(self, identity: Identity) -> Path:
        """Make (or keep) the certificate and key for identity; returns the .crt path."""
        ca_cert, ca_key = self._ca(identity.ca)
        cert_path, key_path = self.cert_path(identity.stem), self.key_path(identity.stem)
        if cert_path.exists() and key_path.exists() and self._matches(cert_path, identity, ca_cert):
            return cert_path
        key = self._new_key()
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in identity.organizations]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name))
        usages = []
        if identity.client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if identity.server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
            )
        )
        names = _general_names(identity.dns_names, identity.ip_addresses)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        write_secret(key_path, self._key_pem(key))
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert_path

    def _ca(self, stem: str):
        if stem not in self._cas:
            if not (self.cert_path(stem).exists() and self.key_path(stem).exists()):
                raise ValueError(f"CA {stem!r} does not exist; call ensure_ca first")
            self.ensure_ca(stem)
        return self._cas[stem]

    @staticmethod
    def _matches(cert_path: Path, identity: Identity, ca_cert: x509.Certificate) -> bool:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.issuer != ca_cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (InvalidSignature, ValueError, TypeError):  # not signed by this CA: reissue
            return False
        if cert.not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
            return False
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        orgs = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        if not cn or cn[0].value != identity.common_name or orgs != identity.organizations:
            return False
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = set(sans)
        except x509.ExtensionNotFound:
            have = set()
        return have == set(_general_names(identity.dns_names, identity.ip_addresses))

    def ensure_service_account_keys(self) -> tuple[Path, Path]:
        """The key pair that signs service-account tokens. RSA-2048 (RS256) whatever the
        algorithm of the certificates, since that is what every token consumer accepts."""
        key_path, pub_path = self.folder / "sa.key", self.folder / "sa.pub"
        if not (key_path.exists() and pub_path.exists()):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            write_secret(key_path, self._key_pem(key))
            _write_public(
                pub_path,
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )
        return key_path, pub_path


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    """A KeyUsage with the named usages on and every other one off."""
    names = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )
    return x509.KeyUsage(**{name: allowed.get(name, False) for name in names})


def _general_names(dns_names: Iterable[str], ips: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dict.fromkeys(dns_names)]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
    return names


def _split_addresses(addresses: Sequence[str]) -> tuple[list[str], list[str]]:
    ips, dns = [], []
    for address in addresses:
        try:
            ipaddress.ip_address(address)
            ips.append(address)
        except ValueError:
            dns.append(address)
    return ips, dns


def master_identities(*, addresses: Sequence[str], service_ip: str, dns_domain: str) -> list[Identity]:
    """Every certificate the master needs. `addresses` are the names and IPs the master
    is reached at (for local: 127.0.0.1 and localhost)."""
    ips, dns = _split_addresses(addresses)
    kubernetes_names = (
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{dns_domain}",
    )
    return [
        Identity(
            "apiserver", "kube-apiserver", client=False, server=True,
            dns_names=tuple(dns) + kubernetes_names, ip_addresses=tuple(ips) + (service_ip,),
        ),
        Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
        Identity("admin", "kubernetes-admin", ("system:masters",)),
        Identity("controller-manager", "system:kube-controller-manager"),
        Identity("scheduler", "system:kube-scheduler"),
        Identity(  # etcd listens on loopback only (master-manifests/etcd.yaml)
            "etcd/server", "kube-etcd", client=True, server=True,
            dns_names=("localhost",), ip_addresses=("127.0.0.1",), ca="etcd/ca",
        ),
        Identity("apiserver-etcd-client", "kube-apiserver-etcd-client", ca="etcd/ca"),
        Identity("front-proxy-client", "front-proxy-client", ca="front-proxy-ca"),
    ]


NPD_USER = "system:kubemark-up:node-problem-detector"


def node_identities(node_names: Iterable[str]) -> list[Identity]:
    """One kubelet identity per hollow node, and the kube-proxy identity they share, as
    kube-proxies on a real cluster share one; and the node-problem-detectors' (bound to
    the system:node-problem-detector role, as its DaemonSet's service account is)."""
    identities = [Identity("kube-proxy", "system:kube-proxy"), Identity("node-problem-detector", NPD_USER)]
    identities += [
        Identity(f"nodes/{name}", f"system:node:{name}", ("system:nodes",)) for name in node_names
    ]
    return identities


def ensure_master_pki(pki: PKI, *, addresses: Sequence[str], service_ip: str, dns_domain: str) -> None:
    pki.ensure_ca("ca", "kubernetes")
    pki.ensure_ca("etcd/ca", "etcd-ca")
    pki.ensure_ca("front-proxy-ca", "front-proxy-ca")
    pki.ensure_service_account_keys()
    for identity in master_identities(addresses=addresses, service_ip=service_ip, dns_domain=dns_domain):
        pki.issue(identity)


def ensure_node_pki(pki: PKI, node_names: Iterable[str]) -> None:
    pki.ensure_ca("ca", "kubernetes")
    for identity in node_identities(node_names):
        pki.issue(identity)
