"""Importers: Piranha lvs.cf and keepalived.conf into a dsrlb `Config` (docs/importers.md).

    result = import_lvs(text, "lvs.cf", fwmarks={80: (PortRange(80, 80), PortRange(443, 443))})
    result.config      # a complete dsrlb.model.Config
    result.warnings    # ConversionWarning(file, line, setting, message) for what has no equivalent

Bad input raises `dsrlb.config.errors.ConfigErrors` with file:line:column errors.
"""

from __future__ import annotations

import re
from typing import Literal

from dsrlb.config.importers.common import (
    ConversionWarning,
    FwmarkOptionError,
    ImportResult,
    parse_fwmark_option,
    parse_fwmark_options,
)
from dsrlb.config.importers.keepalived import import_keepalived
from dsrlb.config.importers.lvs import import_lvs

SourceFormat = Literal["lvs", "keepalived"]

_KEEPALIVED_MARKERS = re.compile(
    r"^\s*(global_defs|vrrp_instance|virtual_server|virtual_server_group|vrrp_sync_group|vrrp_script"
    r"|include|static_ipaddress)\b",
    re.MULTILINE,
)
_LVS_MARKERS = re.compile(
    r"^[ \t]*(serial_no|primary|backup_active|service|network|heartbeat|keepalive|deadtime)[ \t]+=[ \t]"
    r"|^[ \t]*virtual[ \t]+\S+[ \t]+\{[ \t]*$",
    re.MULTILINE,
)


def detect_format(text: str, filename: str = "") -> SourceFormat | None:
    """Which importer reads `text`: by content first (lvs.cf has `key = value`), then by file name."""
    lvs = len(_LVS_MARKERS.findall(text))
    keepalived = len(_KEEPALIVED_MARKERS.findall(text))
    if lvs > keepalived:
        return "lvs"
    if keepalived > lvs:
        return "keepalived"
    name = filename.rsplit("/", 1)[-1].lower()
    if name.endswith(".cf") or "lvs" in name:
        return "lvs"
    if "keepalived" in name:
        return "keepalived"
    return None


__all__ = [
    "ConversionWarning",
    "FwmarkOptionError",
    "ImportResult",
    "SourceFormat",
    "detect_format",
    "import_keepalived",
    "import_lvs",
    "parse_fwmark_option",
    "parse_fwmark_options",
]
