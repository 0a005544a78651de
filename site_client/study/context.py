"""What a site knows about itself when it serves a study message."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from protocols.schema import Protocol


class ProtocolNotApproved(PermissionError):
    """The message's protocol id is not one this site approved (or not the site's own protocol)."""

    def __init__(self, site: str, protocol_id: str, reason: str = "") -> None:
        self.site = site
        self.protocol_id = protocol_id
        extra = f" ({reason})" if reason else ""
        super().__init__(
            f"site {site} has not approved protocol {protocol_id}{extra}; run "
            f"`site-client approve <protocol>` at {site} with the study's protocol file if the site agrees to "
            "run it, then join again"
        )


class SiteStudyError(ValueError):
    """A study message this site cannot serve; the message names the site, the phase and what is wrong."""


@dataclass
class SiteContext:
    """The site's own view: its protocol copy, approvals, data and a durable work folder.

    A fresh process may serve each message, so everything carried between phases lives in ``work_dir``.
    """

    site_name: str
    protocol: Protocol
    protocol_id: str
    approved_ids: set[str]
    data: Path
    data_kind: Literal["manifest", "features"]
    work_dir: Path
    extra: dict[str, str] = field(default_factory=dict)
    run_id: int | None = None  # the Flower run this message belongs to (None: one in-process study)
