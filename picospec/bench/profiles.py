"""Named network profiles of the edge-cloud link, and custom ones given by value."""

from __future__ import annotations

from dataclasses import dataclass

from picospec.errors import InvalidInputError
from picospec.transport.netem import WAN, LinkProfile

PROFILES: dict[str, LinkProfile] = {
    "lan": LinkProfile(rtt_ms=1.0, bandwidth_mbps=1000.0),
    "wan": WAN,
    "cellular": LinkProfile(rtt_ms=60.0, bandwidth_mbps=10.0),
    "constrained": LinkProfile(rtt_ms=100.0, bandwidth_mbps=1.0),
    "extreme": LinkProfile(rtt_ms=100.0, bandwidth_mbps=0.05),
}


@dataclass(frozen=True)
class NamedProfile:
    """A link profile and the name results are filed under."""

    name: str
    link: LinkProfile


def parse_profile(text: str) -> NamedProfile:
    """A profile name (lan, wan, cellular, constrained, extreme) or "RTT_MS/MBPS", e.g. "40/20"."""
    text = text.strip()
    if text in PROFILES:
        return NamedProfile(text, PROFILES[text])
    rtt, slash, bandwidth = text.partition("/")
    try:
        if not slash:
            raise ValueError
        link = LinkProfile(rtt_ms=float(rtt), bandwidth_mbps=float(bandwidth))
    except ValueError:
        raise InvalidInputError(
            f"not a network profile: {text!r}; use one of {', '.join(PROFILES)} or RTT_MS/MBPS such as 40/20"
        ) from None
    # Named by value, so one custom link always files its results under one name.
    return NamedProfile(f"{link.rtt_ms:g}/{link.bandwidth_mbps:g}", link)
