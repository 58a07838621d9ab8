"""Vendor adapters: raw log records in, canonical events out (docs/adapters.md).

One module per source, each a pure function from one raw record to zero or
more canonical events. `ADAPTERS` names them by source id, the id used by
`--format`, the raw topics (`PREFIXraw.<source>`) and the events' `source`.
"""

from __future__ import annotations

from streams.adapters import (
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
from streams.adapters.records import Adapter

ADAPTERS: dict[str, Adapter] = {
    a.source: a
    for a in (
        Adapter(okta.SOURCE, okta.adapt, okta.ENVELOPES, shapes=okta.SHAPES),
        Adapter(m365.SOURCE, m365.adapt, m365.ENVELOPES, shapes=m365.SHAPES),
        Adapter(
            entra_signin.SOURCE,
            entra_signin.adapt,
            entra_signin.ENVELOPES,
            shapes=entra_signin.SHAPES,
        ),
        Adapter(
            google_workspace.SOURCE,
            google_workspace.adapt,
            google_workspace.ENVELOPES,
            shapes=google_workspace.SHAPES,
        ),
        Adapter(netskope.SOURCE, netskope.adapt, netskope.ENVELOPES, shapes=netskope.SHAPES),
        Adapter(
            zscaler_zia.SOURCE, zscaler_zia.adapt, zscaler_zia.ENVELOPES, shapes=zscaler_zia.SHAPES
        ),
        Adapter(intune.SOURCE, intune.adapt, intune.ENVELOPES, shapes=intune.SHAPES),
        Adapter(osquery.SOURCE, osquery.adapt, osquery.ENVELOPES, shapes=osquery.SHAPES),
        Adapter(
            crowdstrike.SOURCE, crowdstrike.adapt, crowdstrike.ENVELOPES, shapes=crowdstrike.SHAPES
        ),
        Adapter(cef_dlp.SOURCE, cef_dlp.adapt, cef_dlp.ENVELOPES, text=True),
        Adapter(
            entra_device.SOURCE,
            entra_device.adapt,
            entra_device.ENVELOPES,
            shapes=entra_device.SHAPES,
        ),
        Adapter(jamf.SOURCE, jamf.adapt, jamf.ENVELOPES, shapes=jamf.SHAPES),
        Adapter(
            google_devices.SOURCE,
            google_devices.adapt,
            google_devices.ENVELOPES,
            shapes=google_devices.SHAPES,
        ),
        Adapter(
            google_rules.SOURCE,
            google_rules.adapt,
            google_rules.ENVELOPES,
            shapes=google_rules.SHAPES,
        ),
        Adapter(
            purview_endpoint.SOURCE,
            purview_endpoint.adapt,
            purview_endpoint.ENVELOPES,
            shapes=purview_endpoint.SHAPES,
        ),
        Adapter(slack.SOURCE, slack.adapt, slack.ENVELOPES, shapes=slack.SHAPES),
        Adapter(
            symantec_dlp.SOURCE,
            symantec_dlp.adapt,
            symantec_dlp.ENVELOPES,
            shapes=symantec_dlp.SHAPES,
        ),
    )
}
SOURCES = tuple(ADAPTERS)
