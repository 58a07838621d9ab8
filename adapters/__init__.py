"""Vendor adapters: raw log records in, canonical events out (docs/adapters.md).

One module per source, each a pure function from one raw record to zero or
more canonical events. `ADAPTERS` names them by source id, the id used by
`--format`, the raw topics (`PREFIXraw.<source>`) and the events' `source`.
"""

from __future__ import annotations

from types import ModuleType

from adapters import (
    cef_dlp,
    crowdstrike,
    entra_device,
    entra_signin,
    google_devices,
    google_rules,
    google_workspace,
    intune,
    jamf,
    m365,
    netskope,
    okta,
    osquery,
    purview_endpoint,
    slack,
    symantec_dlp,
    zscaler_zia,
)
from adapters.records import Adapter


def _adapter(module: ModuleType) -> Adapter:
    """A source module's declarations as its Adapter: SOURCE, adapt,
    ENVELOPES, and SHAPES (JSON sources) or TEXT (text sources)."""
    return Adapter(
        module.SOURCE,
        module.adapt,
        module.ENVELOPES,
        text=getattr(module, "TEXT", False),
        shapes=getattr(module, "SHAPES", ()),
    )


ADAPTERS: dict[str, Adapter] = {
    a.source: a
    for a in map(
        _adapter,
        (
            okta,
            m365,
            entra_signin,
            google_workspace,
            netskope,
            zscaler_zia,
            intune,
            osquery,
            crowdstrike,
            cef_dlp,
            entra_device,
            jamf,
            google_devices,
            google_rules,
            purview_endpoint,
            slack,
            symantec_dlp,
        ),
    )
}
SOURCES = tuple(ADAPTERS)
