"""Site side of a study: one pure function, :func:`handle`, serves every coordinator message.

No Flower here: the ClientApp (``site_client.flower``) converts messages to payloads and calls ``handle``;
tests call it directly. State between phases lives in ``context.work_dir``.
"""

from site_client.study.context import ProtocolNotApproved, SiteContext, SiteStudyError
from site_client.study.dispatch import PHASES, handle
from site_client.study.validator import Refusal

__all__ = ["PHASES", "ProtocolNotApproved", "Refusal", "SiteContext", "SiteStudyError", "handle"]
