"""Vendor adapters: raw log records in, canonical events out (docs/adapters.md).

One module per source, each a pure function from one raw record to zero or
more canonical events. `ADAPTERS` names them by source id, the id used by
`--format`, the raw topics (`PREFIXraw.<source>`) and the events' `source`.
"""

from __future__ import annotations

from streams.adapters import entra_signin, intune, m365, okta
from streams.adapters.records import Adapter

ADAPTERS: dict[str, Adapter] = {
    a.source: a
    for a in (
        Adapter(okta.SOURCE, okta.adapt, okta.ENVELOPES),
        Adapter(m365.SOURCE, m365.adapt, m365.ENVELOPES),
        Adapter(entra_signin.SOURCE, entra_signin.adapt, entra_signin.ENVELOPES),
        Adapter(intune.SOURCE, intune.adapt, intune.ENVELOPES),
    )
}
SOURCES = tuple(ADAPTERS)
