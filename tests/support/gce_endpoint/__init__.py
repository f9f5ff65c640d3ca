"""A local Compute Engine endpoint for the tests: what the real google-cloud-compute
client talks to when KUBEMARK_UP_GCE_ENDPOINT names it.

Strict: every request is checked against the official compute v1 discovery document
(shipped in the google-api-python-client wheel, read from the installed package): the
HTTP method and path must be one of its methods', path parameters must match their
patterns, query parameters must be the method's or the API's standard ones and of
their type, and the JSON body must hold only fields of the method's request schema,
of their types, with the fields that schema marks required for this method. Anything
else is a 400, as the real API would refuse it, so a provider that passes here sends
only what Compute accepts.

Behind that it keeps what it was asked to create (disks, instances, addresses,
firewalls), in memory, with the API's own refusals: a name taken (409), a disk
attached to a running instance or an address in use cannot be deleted, an instance
needs its disks and its reserved address to exist. Changes run as operations that go
PENDING, RUNNING, DONE over op_seconds, the change committed when DONE; faults make
one fail (an HTTP error, or an operation ending in error), and a hold stops a request
until the test lets it through. Every request is logged (for the benchmark).

An instance that reaches RUNNING with `ssh-keys` in its metadata has those keys put
into `authorized_keys` (if set), as the guest environment of a real image does, and
removed when it is deleted: so SSH to its natIP (external_ip, a loopback address
where a test sshd listens) logs in with the key the provider put there; setMetadata
(with the metadata's current fingerprint, else 412) puts the new ones in place.

A running instance also shows its SSH host keys (host_keys, the public key lines of
the test sshd) as a real one does: in its guest attributes under hostkeys/ (when its
metadata has enable-guest-attributes=TRUE; each entry keyed by the key's type, its
value the key itself) and on its serial port 1, printed between the BEGIN/END SSH
HOST KEY KEYS lines at boot (serial=False: a console that printed none;
guest_attributes=False: a guest environment that publishes none).

The modules, each layer built on the one before:
  discovery.py   the discovery document and the checking of requests against it
  filters.py     list filters
  operations.py  operations (Operations)
  resources.py   what it keeps and the API's refusals (Resources)
  guest.py       the guest environment: SSH keys in, host keys out (Guest)
  endpoint.py    ComputeEndpoint: the HTTP server, faults, the log, what tests look at
"""

from tests.support.gce_endpoint.discovery import Rejected, discovery_document
from tests.support.gce_endpoint.endpoint import ComputeEndpoint, Fault, Logged, running
from tests.support.gce_endpoint.filters import parse_filter

__all__ = ["ComputeEndpoint", "Fault", "Logged", "Rejected", "discovery_document", "parse_filter", "running"]
