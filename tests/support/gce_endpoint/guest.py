"""The guest environment of a running instance: the `ssh-keys` of its metadata put into
authorized_keys (if set) and taken out when it goes, as a real image's does; its SSH host
keys (host_keys) shown in its guest attributes under hostkeys/ and on serial port 1.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.gce_endpoint.discovery import Rejected
from tests.support.gce_endpoint.resources import COLLECTIONS, Resources


class Guest(Resources):
    """The endpoint's guest environment (its state is set up by ComputeEndpoint)."""

    authorized_keys: Path | None
    host_keys: list[str]
    serial: bool
    guest_attributes: bool
    _granted_keys: dict[str, list[str]]  # instance selfLink -> key lines it added

    def _grant_keys(self, instance: dict) -> None:
        """The guest environment: the ssh-keys of the metadata in authorized_keys."""
        link = instance["selfLink"]
        self._revoke_keys(link)
        keys = [item.get("value", "") for item in instance.get("metadata", {}).get("items", []) if item.get("key") == "ssh-keys"]
        lines = [line.split(":", 1)[1].strip() for text in keys for line in text.splitlines() if ":" in line]
        if self.authorized_keys is not None and lines:
            with self.authorized_keys.open("a") as handle:
                handle.writelines(line + "\n" for line in lines)
            self._granted_keys[link] = lines

    def _revoke_keys(self, link: str) -> None:
        granted = self._granted_keys.pop(link, [])
        if granted and self.authorized_keys is not None and self.authorized_keys.exists():
            kept = [line for line in self.authorized_keys.read_text().splitlines() if line not in granted]
            self.authorized_keys.write_text("".join(line + "\n" for line in kept))

    def _running(self, project: str, zone: str, name: str) -> dict:
        found = self._get(COLLECTIONS["instances"], project, zone, name)
        if found.get("status") != "RUNNING":
            raise Rejected(400, f"The resource '{found['selfLink']}' is not ready", "resourceNotReady")
        return found

    def _serial_port(self, project: str, zone: str, name: str, query: dict[str, str]) -> dict:
        found = self._running(project, zone, name)
        port = int(query.get("port", "1"))
        if not 1 <= port <= 4:
            raise Rejected(400, f"Invalid value for field 'port': '{port}'. Must be between 1 and 4.")
        lines = [f"Booting `Debian GNU/Linux' ({name})", "[    0.000000] Linux version 6.1.0-cloud-amd64"]
        if port == 1 and self.serial:
            lines += ["-----BEGIN SSH HOST KEY KEYS-----", *self.host_keys, "-----END SSH HOST KEY KEYS-----"]
        lines.append(f"Debian GNU/Linux 12 {name} ttyS0")
        contents = "".join(line + "\n" for line in lines) if port == 1 else ""
        start = int(query.get("start", "0"))
        return {"kind": "compute#serialPortOutput", "contents": contents[start:], "start": str(start),
                "next": str(len(contents)), "selfLink": found["selfLink"] + f"/serialPort?port={port}"}

    def _guest_attributes(self, project: str, zone: str, name: str, query: dict[str, str]) -> dict:
        found = self._running(project, zone, name)
        items = {i.get("key"): i.get("value") for i in found.get("metadata", {}).get("items", [])}
        path = query.get("queryPath", "")
        entries = [{"namespace": "hostkeys", "key": line.split()[0], "value": line.split()[1]}
                   for line in self.host_keys]
        enabled = self.guest_attributes and str(items.get("enable-guest-attributes", "")).upper() == "TRUE"
        if not enabled or not path or not entries:
            raise Rejected(404, f"The resource '{found['selfLink']}/guestAttributes/{path}' was not found", "notFound")
        chosen = [e for e in entries if f"{e['namespace']}/{e['key']}".startswith(path)]
        if not chosen:
            raise Rejected(404, f"The resource '{found['selfLink']}/guestAttributes/{path}' was not found", "notFound")
        return {"kind": "compute#guestAttributes", "queryPath": path, "queryValue": {"items": chosen},
                "selfLink": found["selfLink"] + f"/guestAttributes/{path}"}
