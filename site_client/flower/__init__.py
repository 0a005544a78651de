"""Flower glue on the hospital side: ClientApp, SuperNode supervisor, audit log, approvals, keys."""
