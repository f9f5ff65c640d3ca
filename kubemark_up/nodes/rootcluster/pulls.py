"""The image pulls a hollow-node pod's status says failed, one short line per image,
and whether pulling again can still succeed. Reads pod bodies as the root cluster
returns them (dicts); calls nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The kubelet's waiting reasons for an image it does not have.
PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
# Retrying cannot help these: the name is malformed, or pulling is not allowed.
_NEVER = ("InvalidImageName", "ErrImageNeverPull")
# The runtime's words for a registry that answered that it holds no such image
# (containerd: "...: not found", CRI code NotFound; the distribution spec's codes).
_NOT_FOUND = re.compile(r"\bnot found\b|code = NotFound|manifest unknown|name unknown", re.IGNORECASE)
# The kubelet's wrapping of a pull error, in front of the runtime's own message.
_WRAPPING = re.compile(r'^(Back-off pulling image "[^"]*"(: )?)?(ErrImagePull: )?(rpc error: code = \w+ desc = )?')


@dataclass(frozen=True)
class PullFailure:
    image: str
    cause: str  # the root cause, a few words: "not found", "connection refused"
    permanent: bool  # retrying cannot help: start may fail at once
    message: str  # the runtime's whole message, for the detail under an error line
    containers: tuple[str, ...]

    def line(self) -> str:
        return f"cannot pull {self.image}: {self.cause}" if self.cause else f"cannot pull {self.image}"


def pull_cause(message: str) -> str:
    """The root cause of a pull error, without the kubelet's and the runtime's wrapping:
    Go errors name their innermost cause last ('...: dial tcp ...: connect: connection refused')."""
    inner = _WRAPPING.sub("", message.strip())
    if not inner or inner.startswith("Back-off pulling image"):
        return ""  # a kubelet that does not repeat the error says only that it backs off
    if _NOT_FOUND.search(inner):
        return "not found"
    return inner.rsplit(": ", 1)[-1].strip()


def pull_failures(pod: dict) -> list[PullFailure]:
    """The pod's image pulls that failed, one per image, whatever the number of its
    containers (a pod whose three containers share an image has one failure, not an
    ErrImagePull and two ImagePullBackOffs)."""
    seen: dict[str, list[tuple[str, str, str, str]]] = {}  # image -> (container, reason, message, cause)
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in PULL_REASONS:
            message = waiting.get("message") or ""
            cause = pull_cause(message) or ("" if reason in ("ErrImagePull", "ImagePullBackOff") else reason)
            seen.setdefault(status.get("image") or "?", []).append((status.get("name", "?"), reason, message, cause))
    failures = []
    for image, containers in seen.items():
        # The container that says most: a cause over none.
        _, _, message, cause = max(containers, key=lambda c: bool(c[3]))
        permanent = cause == "not found" or any(reason in _NEVER for _, reason, _, _ in containers)
        failures.append(PullFailure(image, cause, permanent, message, tuple(c[0] for c in containers)))
    return failures
