"""What the endpoint keeps: disks, instances, addresses and firewalls, in memory, with the
API's own refusals (a name taken is a 409, a disk attached to a running instance or an
address in use cannot be deleted, an instance needs its disks and its reserved address
to exist); each change runs as an operation (operations.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from dataclasses import dataclass

from tests.support.gce_endpoint.discovery import Rejected
from tests.support.gce_endpoint.filters import parse_filter
from tests.support.gce_endpoint.operations import Operations


@dataclass(frozen=True)
class Collection:
    name: str  # as in the path: disks, instances, addresses, firewalls
    scope: str  # zones, regions or global
    param: str  # the path parameter that names one
    kind: str
    ready: str  # status once created ("" for none)
    creating: str
    deleting: str


COLLECTIONS = {
    c.name: c for c in (
        Collection("disks", "zones", "disk", "compute#disk", "READY", "CREATING", "DELETING"),
        Collection("instances", "zones", "instance", "compute#instance", "RUNNING", "PROVISIONING", "STOPPING"),
        Collection("addresses", "regions", "address", "compute#address", "RESERVED", "RESERVING", "RESERVED"),
        Collection("firewalls", "global", "firewall", "compute#firewall", "", "", ""),
    )
}
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


class Resources(Operations):
    """The endpoint's resources (its state is set up by ComputeEndpoint)."""

    resources: dict[tuple[str, str, str, str], dict]  # (collection, project, scope, name)
    external_ip: str

    # What the guest environment does when an instance runs or goes (guest.py).
    def _grant_keys(self, instance: dict) -> None:
        pass

    def _revoke_keys(self, link: str) -> None:
        pass

    def _fill(self, collection: Collection, project: str, scope: str, body: dict, status: str) -> dict:
        body.update(kind=collection.kind, id=str(next(self._ids)),
                    creationTimestamp=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                    selfLink=self._link(project, scope, collection.name, body.get("name", "")))
        if collection.scope == "zones":
            body["zone"] = self._link(project, scope)
        elif collection.scope == "regions":
            body["region"] = self._link(project, scope)
        if status:
            body["status"] = status
        return body

    def _not_found(self, collection: Collection, project: str, scope: str, name: str) -> Rejected:
        return Rejected(404, f"The resource 'projects/{project}/{scope}/{collection.name}/{name}' was not found", "notFound")

    def _get(self, collection: Collection, project: str, scope: str, name: str) -> dict:
        found = self.resources.get((collection.name, project, scope, name))
        if found is None:
            raise self._not_found(collection, project, scope, name)
        return found

    def _list(self, collection: Collection, project: str, scope: str, query: dict[str, str]) -> dict:
        test = parse_filter(query.get("filter", ""))
        items = [r for (c, p, s, _), r in sorted(self.resources.items()) if (c, p, s) == (collection.name, project, scope)
                 and test(r)]
        return {"kind": collection.kind + "List", "id": f"projects/{project}/{scope}/{collection.name}",
                "items": items, "selfLink": self._link(project, scope, collection.name)}

    def _aggregated(self, collection: Collection, project: str, query: dict[str, str]) -> dict:
        test = parse_filter(query.get("filter", ""))
        scoped: dict[str, dict] = {}
        for (c, p, s, _), r in sorted(self.resources.items()):
            if c == collection.name and p == project and test(r):
                scoped.setdefault(s, {collection.name: []})[collection.name].append(r)
        return {"kind": collection.kind + "AggregatedList", "id": f"projects/{project}/aggregated/{collection.name}",
                "items": scoped, "selfLink": self._link(project, "aggregated", collection.name)}

    def _insert(self, collection: Collection, project: str, scope: str, body: dict, op_error: str,
                op_message: str) -> dict:
        name = body.get("name")
        if not name or not re.fullmatch(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?", name):
            raise Rejected(400, f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                           "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        key = (collection.name, project, scope, name)
        if key in self.resources:
            raise Rejected(409, f"The resource 'projects/{project}/{scope}/{collection.name}/{name}' already exists",
                           "alreadyExists")
        for label, value in body.get("labels", {}).items():
            if not _LABEL_KEY.fullmatch(label) or not _LABEL_VALUE.fullmatch(value):
                raise Rejected(400, f"Invalid value for field 'resource.labels': '{label}={value}'")
        if collection.name == "instances":
            self._check_instance(project, scope, body)
        if collection.name == "firewalls" and not body.get("allowed") and not body.get("denied"):
            raise Rejected(400, "Invalid value for field 'resource': a firewall needs allowed or denied rules")
        made = self._fill(collection, project, scope, body, collection.creating)
        if collection.name == "instances":
            made.setdefault("metadata", {})["fingerprint"] = _fingerprint()
        if collection.name == "addresses":
            made["address"] = body.get("address") or self.external_ip
            made.setdefault("addressType", "EXTERNAL")
        self.resources[key] = made

        def commit() -> None:
            if collection.ready:
                made["status"] = collection.ready
            if collection.name == "instances":
                self._attach(project, scope, made)

        def undo() -> None:
            self.resources.pop(key, None)

        return self._operation("insert", project, scope, made["selfLink"], commit, undo, op_error, op_message)

    def _check_instance(self, project: str, zone: str, body: dict) -> None:
        region = zone.split("/")[1].rsplit("-", 1)[0]
        if not body.get("disks"):
            raise Rejected(400, "Invalid value for field 'resource.disks': an instance needs a boot disk")
        for disk in body["disks"]:
            source = disk.get("source")
            if source:
                name = source.rsplit("/", 1)[1]
                found = self.resources.get(("disks", project, zone, name))
                if found is None or not source.endswith(f"{zone}/disks/{name}"):
                    raise Rejected(404, f"The resource '{source}' was not found", "notFound")
                if found.get("users"):
                    raise Rejected(400, f"The disk resource '{source}' is already being used by "
                                   f"'{found['users'][0]}'", "resourceInUseByAnotherResource")
            elif not disk.get("initializeParams"):
                raise Rejected(400, "Invalid value for field 'resource.disks': a disk needs source or initializeParams")
        for nic in body.get("networkInterfaces", []):
            for config in nic.get("accessConfigs", []):
                ip = config.get("natIP")
                if not ip:
                    continue
                owners = [r for (c, p, s, _), r in self.resources.items()
                          if c == "addresses" and p == project and s == f"regions/{region}" and r.get("address") == ip]
                if not owners:
                    raise Rejected(400, f"Invalid value for field 'resource.networkInterfaces[0].accessConfigs[0].natIP': "
                                   f"'{ip}'. The specified external IP address '{ip}' was not found in region '{region}'.")
                if owners[0].get("users"):
                    raise Rejected(400, f"The IP address '{ip}' is already being used by another resource.",
                                   "resourceInUseByAnotherResource")

    def _attach(self, project: str, zone: str, instance: dict) -> None:
        """The instance running: its disks and address in use by it, its SSH keys in place."""
        region = zone.split("/")[1].rsplit("-", 1)[0]
        link = instance["selfLink"]
        for disk in instance["disks"]:
            params = disk.get("initializeParams")
            if params is not None and not disk.get("source"):
                # The boot disk is made with the instance, named after it unless told.
                boot = self._fill(COLLECTIONS["disks"], project, zone, {
                    "name": params.get("diskName") or instance["name"], "sizeGb": params.get("diskSizeGb", "10"),
                    "sourceImage": params.get("sourceImage", ""), "labels": dict(params.get("labels", {}))}, "READY")
                boot["users"] = [link]
                self.resources[("disks", project, zone, boot["name"])] = boot
                disk["source"] = boot["selfLink"]
            if disk.get("source"):
                found = self.resources.get(("disks", project, zone, disk["source"].rsplit("/", 1)[1]))
                if found is not None:
                    found["users"] = [link]
        for nic in instance.get("networkInterfaces", []):
            nic.setdefault("networkIP", "10.128.0.2")
            for config in nic.get("accessConfigs", []):
                config.setdefault("natIP", self.external_ip)
                for (c, p, s, _), r in self.resources.items():
                    if c == "addresses" and p == project and s == f"regions/{region}" and r.get("address") == config["natIP"]:
                        r["users"], r["status"] = [link], "IN_USE"
        self._grant_keys(instance)

    def _set_metadata(self, project: str, zone: str, name: str, body: dict) -> dict:
        found = self._get(COLLECTIONS["instances"], project, zone, name)
        current = found.get("metadata", {}).get("fingerprint")
        if body.get("fingerprint") != current:
            raise Rejected(412, "Supplied fingerprint does not match current metadata fingerprint.", "conditionNotMet")

        def commit() -> None:
            found["metadata"] = {"kind": "compute#metadata", "items": list(body.get("items", [])),
                                 "fingerprint": _fingerprint()}
            if found.get("status") == "RUNNING":
                self._grant_keys(found)

        return self._operation("setMetadata", project, zone, found["selfLink"], commit, lambda: None, "", "")

    def _detach(self, instance: dict) -> None:
        link = instance["selfLink"]
        for disk in instance["disks"]:
            if disk.get("autoDelete") and disk.get("source"):
                # .../projects/<project>/zones/<zone>/disks/<name>
                project, _, zone, _, name = disk["source"].split("/projects/", 1)[1].split("/")
                self.resources.pop(("disks", project, f"zones/{zone}", name), None)
        for (c, *_), r in self.resources.items():
            if c in ("disks", "addresses") and r.get("users") == [link]:
                r.pop("users")
                if c == "addresses":
                    r["status"] = "RESERVED"
        self._revoke_keys(link)

    def _forget(self, collection: str, project: str, scope: str, name: str) -> None:
        found = self.resources.pop((collection, project, scope, name), None)
        if found is not None and collection == "instances":
            self._detach(found)

    def _delete(self, collection: Collection, project: str, scope: str, name: str, op_error: str, op_message: str) -> dict:
        found = self._get(collection, project, scope, name)
        if found.get("users"):
            raise Rejected(400, f"The {collection.name[:-1]} resource '{found['selfLink']}' is already being used by "
                           f"'{found['users'][0]}'", "resourceInUseByAnotherResource")
        if collection.deleting:
            found["status"] = collection.deleting
        status = found.get("status")

        def commit() -> None:
            self._forget(collection.name, project, scope, name)

        def undo() -> None:
            if status is not None:
                found["status"] = collection.ready

        return self._operation("delete", project, scope, found["selfLink"], commit, undo, op_error, op_message)

    def _patch(self, collection: Collection, project: str, scope: str, name: str, body: dict) -> dict:
        found = self._get(collection, project, scope, name)
        if body.get("name", name) != name:
            raise Rejected(400, "Invalid value for field 'resource.name': a patch cannot rename")
        changes = {k: v for k, v in body.items() if k not in ("kind", "id", "selfLink", "creationTimestamp")}

        def commit() -> None:
            found.update(changes)

        return self._operation("patch", project, scope, found["selfLink"], commit, lambda: None, "", "")


def _fingerprint() -> str:
    """A metadata fingerprint (the API's: 8 bytes, base64), new with every change."""
    return base64.b64encode(os.urandom(8)).decode()
