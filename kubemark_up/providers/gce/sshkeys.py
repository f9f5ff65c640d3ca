"""The SSH keys between kubemark-up and the master VM: the key pair made for the
cluster and its place in the VM's `ssh-keys` metadata; and the VM's host key, met on
first contact, checked against the host keys the VM published through the Compute
API (its guest attributes, else its serial console), so that no other host that
answers at its address gets a certificate or a key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kubemark_up import pki
from kubemark_up.context import Context
from kubemark_up.errors import KubemarkUpError
from kubemark_up.hosts.ssh import fingerprint
from kubemark_up.providers.gce.api import Compute, Forbidden, NotFound, Scope, retrying
from kubemark_up.providers.gce.resources import INSTANCE


class _NoneYet(KubemarkUpError):
    """The VM has published no host key (yet)."""


def ensure_key(path: Path, *, comment: str) -> str:
    """The cluster's SSH key pair: the private key 0600 (made once, kept for stop), the
    public key as an OpenSSH line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if path.exists():
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption())
        pki.write_secret(path, data)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} {comment}"


def ensure_in_metadata(ctx: Context, compute: Compute, zone: Scope, name: str, *, user: str, public: str,
                       mark: str) -> None:
    """An adopted VM (ours by its label: made by an earlier start of this name) must
    let this cluster's key in. Its metadata's ssh-keys are checked; when our key is
    not there (an earlier key of this cluster, say, whose private half is gone) it is
    put there, in place of the earlier keys of this cluster (those ending in mark),
    others' kept, with the metadata's fingerprint, so a change made meanwhile is not
    overwritten."""
    from google.cloud import compute_v1
    found = compute.get("Instances", zone, f"read VM {name}", instance=name)
    items = {item.key: item.value for item in found.metadata.items}
    lines = [line for line in (items.get("ssh-keys") or "").splitlines() if line.strip()]
    ours = f"{user}:{public}"
    if any(key_of(line) == key_of(ours) for line in lines):
        return
    ctx.ui.warn(f"VM {name} does not carry this cluster's SSH key in its metadata (ssh-keys): adding it")
    kept = [line for line in lines if not (line.startswith(f"{user}:") and line.rstrip().endswith(f" {mark}"))]
    items["ssh-keys"] = "\n".join([*kept, ours])
    metadata = compute_v1.Metadata(fingerprint=found.metadata.fingerprint,
                                   items=[compute_v1.Items(key=k, value=v) for k, v in items.items()])
    what = f"put this cluster's SSH key in the metadata of VM {name}"
    operation = compute.call("Instances", "set_metadata", what, project=compute.project,
                             zone=zone.name, instance=name, metadata_resource=metadata)
    compute.wait(operation, zone, what)


def published_host_keys(compute: Compute, zone: Scope, name: str,
                        forbidden: Callable[[str], None] = lambda message: None) -> tuple[str, list[str]]:
    """The SSH host keys VM name published itself ("type base64" each), and where:
    its guest attributes (hostkeys/, as `gcloud compute ssh` reads them), else what
    it printed on its serial console at boot (the BEGIN/END SSH HOST KEY KEYS
    block): also when the credentials may not read guest attributes (forbidden
    hears why). ("", []) when it published none."""
    from google.cloud import compute_v1
    try:
        found = compute.call("Instances", "get_guest_attributes", f"read the guest attributes of VM {name}",
                             request=compute_v1.GetGuestAttributesInstanceRequest(
                                 project=compute.project, zone=zone.name, instance=name, query_path="hostkeys/"))
        keys = []
        for entry in found.query_value.items:
            value = entry.value.split()
            if entry.namespace == "hostkeys" and value:
                # The key's type is the entry's key; its value the key (with the type before it, or not).
                keys.append(" ".join(value[:2]) if value[0] == entry.key and len(value) > 1 else f"{entry.key} {value[0]}")
        if keys:
            return "guest attributes", keys
    except NotFound:
        pass
    except Forbidden as exc:
        forbidden(exc.message)
    output = compute.call("Instances", "get_serial_port_output", f"read the serial port of VM {name}",
                          project=compute.project, zone=zone.name, instance=name)
    keys = serial_host_keys(output.contents)
    return ("serial port", keys) if keys else ("", [])


def check_host_key(ctx: Context, compute: Compute, zone: Scope, name: str, *, host: str, timeout: float) -> None:
    """The host key SSH met on first contact with host must be one VM name published
    through the Compute API: else another host answered at its address (and is
    refused before any certificate or key goes to it)."""
    pinned = ctx.state.host_keys.get(host)
    if not pinned:
        return

    said: list[str] = []

    def forbidden(message: str) -> None:
        if not said:  # the read is retried: once is enough
            ctx.ui.warn(f"{message}: the VM's host keys are read from its serial console instead")
        said.append(message)

    def published() -> tuple[str, list[str]]:
        where, keys = published_host_keys(compute, zone, name, forbidden)
        if not keys:
            raise _NoneYet(f"VM {name} has published no SSH host key yet")
        return where, keys

    try:
        where, keys = retrying(published, on=_NoneYet, timeout=timeout)
    except _NoneYet:
        ctx.ui.warn(f"VM {name} published no SSH host key (guest attributes, serial "
                    f"port): the key met on first contact ({fingerprint(pinned)}) is trusted as it is")
        return
    if key_of(pinned) not in {key_of(k) for k in keys}:
        # Not pinned, and not spoken to again: undoing start goes nowhere near it.
        del ctx.state.host_keys[host]
        instance = ctx.state.resource(INSTANCE.state_kind, name)
        if instance is not None:
            instance.details["host_key_refused"] = True
        ctx.save()
        raise KubemarkUpError(
            f"the SSH host key of {host} ({fingerprint(pinned)}) is not one that VM "
            f"{name} published in its {where} "
            f"({', '.join(fingerprint(k) for k in keys)}): another host answered at its address; refused")
    ctx.ui.info(f"the SSH host key of {host} matches the one the VM published in its {where}")


def key_of(line: str) -> tuple[str, str]:
    """(type, base64) of an OpenSSH public key line, with or without "user:" before it
    and a comment after it."""
    parts = line.split(":", 1)[1].split() if ":" in line.split()[0] else line.split()
    return parts[0], parts[1]


def serial_host_keys(contents: str) -> list[str]:
    """The host keys a VM printed on its console at boot, between the BEGIN and END
    SSH HOST KEY KEYS lines (cloud-init's and the guest environment's format)."""
    found: list[str] = []
    inside = False
    for line in contents.splitlines():
        text = line.strip()
        if text.endswith("-----BEGIN SSH HOST KEY KEYS-----"):
            inside, found = True, []
        elif text.endswith("-----END SSH HOST KEY KEYS-----"):
            inside = False
        elif inside and len(text.split()) >= 2:
            found.append(" ".join(text.split()[:2]))
    return found
