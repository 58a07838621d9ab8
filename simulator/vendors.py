"""The simulated day as the bank's products write it (`sepwatch simulate --vendors`).

`vendor_day()` takes the canonical day of `simulator.day` (one id per
device: `lt-hq-00042`) and writes each record the way the product that would
report it names the device, with no hand-written `devices:` entry anywhere:

- each posture as two vendor records at its time: Intune's diagnostic export
  (category `Devices`, the `IntuneDevices` columns) under the device's Entra
  id (`ReferenceId`), with its Intune `DeviceId`, serial and name, speaking
  for management, encryption, screen lock (compliance) and jailbreak; and
  Falcon host details under the agent id (`device_id`), with hostname and
  serial, speaking for the sensor (EDR). Both give the Windows build
  (`OSVersion`, `kernel_version`), aged through the mapping's `os_releases`:
  a passing patch level is the newest build released before the day that
  stays within the policy's age to its end, a failing one the oldest in the
  table (the days must fall where both hold: a clear error otherwise);
- each internal sign-in from a device as an Entra sign-in (Graph `signIn`)
  naming the Entra device id;
- each DLP alert from a device to removable media, a printer or elsewhere
  off the device (`usb`, `print`, `other`) as a Purview Endpoint DLP audit
  record naming the device's hostname (`DeviceName`), from an address of
  the user's entity's network;
- every other access and DLP alert naming its device by hostname, as a web
  proxy (Zscaler's `devicehostname`) and Purview do; these stay canonical
  events, since the simulator's uploads, shares, mail and files carry more
  than those products' records hold (a file's sha256, a share's audience,
  a mail channel).

The truth (`DeviceNames`) says which names are one device. `adapted()` runs
every vendor record through its real adapter, in arrival order, into the
canonical lines replay and the stream read.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from adapters import ADAPTERS
from adapters.intake import adapt_one
from adapters.mapping import VendorMapping
from adapters.records import Skip
from schemas import Policy
from simulator.day import internal_networks, simulate

CANONICAL = "canonical"  # an event no vendor record here carries, passed as it is
VENDOR_SOURCES = ("intune", "crowdstrike", "entra-signin", "purview-endpoint")
PURVIEW = {
    "usb": "FileCopiedToRemovableMedia",
    "print": "FilePrinted",
    "other": "FileCopiedToNetworkShare",
}
_NAMESPACE = uuid.UUID("6f1c3b0e-8d2a-4c55-9e0b-5a7d2f3c9b41")  # the made-up bank's tenant


def vendor_mapping(base: VendorMapping, policy: Policy) -> VendorMapping:
    """The bank's mapping as the simulated day needs it: its internal
    networks, and no hand-written `devices:` entry (the graph learns them)."""
    spec = base.model_dump(exclude={"devices", "internal_networks", "egress_proxies"})
    networks = [{"cidr": cidr, "entity": entity} for cidr, entity in internal_networks(policy)]
    return VendorMapping.model_validate({**spec, "internal_networks": networks}).with_registry(
        policy
    )


class DeviceNames(NamedTuple):
    """How each product names one device (the day's truth)."""

    entra: str
    intune: str
    falcon: str
    serial: str
    hostname: str


def names_of(device: str) -> DeviceNames:
    """Deterministic, and never the canonical id in another case."""
    crc = zlib.crc32(device.encode())
    return DeviceNames(
        entra=str(uuid.uuid5(_NAMESPACE, "entra:" + device)),
        intune=str(uuid.uuid5(_NAMESPACE, "intune:" + device)),
        falcon=uuid.uuid5(_NAMESPACE, "falcon:" + device).hex,
        serial=f"PF{crc:08X}",
        hostname=f"WS-{device.upper().replace('-', '')}",
    )


class Arrival(NamedTuple):
    """One record as it arrives: the source that reads it, and the record."""

    source: str
    record: dict[str, Any]


@dataclass(frozen=True)
class Builds:
    """Windows builds (one release line of the mapping's table) that pass
    and fail the patch requirement on the day."""

    passing: str
    failing: str
    max_days: int

    @classmethod
    def of(cls, mapping: VendorMapping, first: date, last: date, max_days: int) -> Builds:
        """Builds for postures stamped from the day before `first` (the
        simulator's first reports) to `last`."""
        releases = sorted(
            (r.released, r.version)
            for r in mapping.os_releases
            if r.platform == "windows" and r.version.startswith("10.0.26100.")
        )
        passing = [v for d, v in releases if d < first and (last - d).days <= max_days]
        failing = [v for d, v in releases if (first - d).days > max_days + 1]
        if not passing or not failing:
            raise ValueError(
                "the mapping's os_releases (windows 10.0.26100) have no build that passes "
                f"os_patch_age_days_max {max_days} from {first} to {last} and one that fails "
                "it: simulate days in their range (the default start is)"
            )
        return cls(passing[-1], failing[0], max_days)


@dataclass(frozen=True)
class Bank:
    """What the vendor records take from the bank's set-up: Windows builds
    for patch levels, an address in each entity's network, and a vendor
    name for each sensitive data type (the mapping's `data_types`)."""

    mapping: VendorMapping
    builds: Builds
    addresses: dict[str, str]
    type_names: dict[str, str]

    @classmethod
    def of(cls, base: VendorMapping, policy: Policy, start: datetime, hours: float) -> Bank:
        first, last = start.date(), (start + timedelta(hours=hours)).date()
        builds = Builds.of(base, first, last, policy.posture.require.os_patch_age_days_max)
        addresses = {
            entity: cidr.replace(".0.0/16", ".250.18") for cidr, entity in internal_networks(policy)
        }
        names: dict[str, str] = {}
        for name, data_type in base.data_types.items():
            names.setdefault(data_type, name)
        return cls(vendor_mapping(base, policy), builds, addresses, names)


def vendor_day(events: Iterable[dict[str, Any]], bank: Bank) -> Iterator[Arrival]:
    """The canonical day's records as the products write them, in its arrival order."""
    for e in events:
        device = e.get("device_id")
        if device is None or e["stream"] == "control_review":
            yield Arrival(CANONICAL, e)
        elif e["stream"] == "device_posture":
            yield Arrival("intune", _intune(e, names_of(device), bank.builds))
            yield Arrival("crowdstrike", _falcon(e, names_of(device), bank.builds))
        elif _signs_in(e, bank.mapping):
            yield Arrival("entra-signin", _sign_in(e, names_of(device)))
        elif e["stream"] == "dlp_alert" and e["channel"] in PURVIEW:
            yield Arrival("purview-endpoint", _purview(e, names_of(device), bank))
        else:
            yield Arrival(CANONICAL, {**e, "device_id": names_of(device).hostname})


def _signs_in(e: dict[str, Any], mapping: VendorMapping) -> bool:
    """An internal sign-in Entra would log, to an app whose name the mapping
    reads as that app (a consumer `chatgpt` is not ChatGPT Enterprise, but
    the mapping's name `ChatGPT` says it is: such a sign-in stays canonical)."""
    return (
        e["stream"] == "saas_access"
        and e["action"] == "login"
        and e["network_zone"] == "internal"
        and e.get("auth") is not None
        and mapping.app_or_passthrough(e["saas_app"]) == e["saas_app"]
    )


def _zulu(timestamp: str) -> str:
    moment = datetime.fromisoformat(timestamp)
    utc = moment - (moment.utcoffset() or timedelta(0))
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _build(e: dict[str, Any], builds: Builds) -> str:
    age = e.get("os_patch_age_days")
    return builds.failing if age is not None and age > builds.max_days else builds.passing


def _intune(e: dict[str, Any], n: DeviceNames, builds: Builds) -> dict[str, Any]:
    seen = _zulu(e["timestamp"])
    return {
        "time": seen,
        "category": "Devices",
        "operationName": "Devices",
        "properties": {
            "DeviceId": n.intune,
            "ReferenceId": n.entra,
            "DeviceName": n.hostname,
            "SerialNumber": n.serial,
            "UPN": e.get("user_id"),
            "OS": "Windows",
            "OSVersion": _build(e, builds),
            "IsManaged": bool(e["managed"]),
            "CompliantState": "Compliant" if e["screen_lock"] else "Noncompliant",
            "EncryptionStatusString": "Encrypted" if e["disk_encrypted"] else "NotEncrypted",
            "JailBroken": "True" if e["jailbroken"] else "False",
            "LastContact": seen,
        },
    }


def _falcon(e: dict[str, Any], n: DeviceNames, builds: Builds) -> dict[str, Any]:
    return {
        "device_id": n.falcon,
        "hostname": n.hostname,
        "serial_number": n.serial,
        "platform_name": "Windows",
        "kernel_version": _build(e, builds),
        "last_seen": _zulu(e["timestamp"]),
        "status": "normal",
        "reduced_functionality_mode": "no" if e["edr_running"] else "yes",
        "device_policies": {"prevention": {"applied": True}},
    }


def _sign_in(e: dict[str, Any], n: DeviceNames) -> dict[str, Any]:
    mfa = e["auth"].get("mfa")
    record: dict[str, Any] = {
        "id": e["event_id"],
        "createdDateTime": _zulu(e["timestamp"]),
        "userPrincipalName": e["user_id"],
        "appDisplayName": e["saas_app"],
        "ipAddress": e.get("src_ip"),
        "status": {"errorCode": 0},
        "deviceDetail": {"deviceId": n.entra, "operatingSystem": "Windows"},
    }
    if mfa is not None:
        record["authenticationRequirement"] = (
            "multiFactorAuthentication" if mfa else "singleFactorAuthentication"
        )
    return record


def _purview(e: dict[str, Any], n: DeviceNames, bank: Bank) -> dict[str, Any]:
    file = e.get("object") or {}
    types = e["data_types"]
    return {
        "Id": e["event_id"],
        "RecordType": 63,
        "CreationTime": _zulu(e["timestamp"]).removesuffix("Z"),
        "Operation": PURVIEW[e["channel"]],
        "Workload": "Endpoint",
        "UserId": e["user_id"],
        "ClientIP": bank.addresses[e["entity"]],
        "DeviceName": n.hostname,
        "ObjectId": "C:\\Users\\Public\\" + str(file.get("name") or "file"),
        "Sha256": file.get("sha256"),
        "FileSize": file.get("size"),
        "EnforcementMode": 1,
        "SensitiveInfoTypeData": [
            {
                "SensitiveInfoTypeName": bank.type_names.get(t, t),
                "Count": e["match_count"] // len(types),
            }
            for t in types
        ],
    }


def adapted(arrivals: Iterable[Arrival], mapping: VendorMapping) -> Iterator[dict[str, Any]]:
    """Every record through its source's adapter, in arrival order: the
    canonical events the stream's adapter agent would publish. A record the
    adapter skips or cannot map is an error of this generator, not the day's."""
    for arrival in arrivals:
        if arrival.source == CANONICAL:
            yield arrival.record
            continue
        out = adapt_one(ADAPTERS[arrival.source], arrival.record, mapping)
        if isinstance(out, Skip):
            raise ValueError(f"{arrival.source} skipped a simulated record: {out}")
        yield from out


def lines(events: Iterable[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events]


@dataclass(frozen=True)
class VendorDay:
    """One simulated day twice: in canonical form with one id per device,
    and as the products write it (records, and what the adapters make of them)."""

    canonical: list[dict[str, Any]]
    arrivals: list[Arrival]
    adapted: list[dict[str, Any]]


def simulated_vendor_day(
    policy: Policy, base: VendorMapping, start: datetime, hours: float, **simulate_args: Any
) -> VendorDay:
    """`simulate(policy, start=start, hours=hours, **simulate_args)`, and
    the same day through the vendors."""
    bank = Bank.of(base, policy, start, hours)  # refuses days it cannot write first
    canonical = list(simulate(policy, start=start, hours=hours, **simulate_args))
    arrivals = list(vendor_day(canonical, bank))
    return VendorDay(canonical, arrivals, list(adapted(arrivals, bank.mapping)))


def named_alike(d: VendorDay) -> list[dict[str, Any]]:
    """The vendor day's events with every device named by its canonical id and
    no aliases, as a complete hand-written mapping would give them: the same
    judgments with nothing to learn or resolve (the benchmark's baseline)."""
    canonical = {e["device_id"] for e in d.canonical if e.get("device_id")}
    truth = {name.lower(): c for c in canonical for name in names_of(c)}
    return [
        {k: v for k, v in e.items() if k != "device_aliases"}
        | {"device_id": truth.get(str(e.get("device_id")).lower(), e.get("device_id"))}
        for e in d.adapted
    ]


def write_day(d: VendorDay, folder: Path) -> dict[str, int]:
    """The day as files: each product's records (`<source>.jsonl`, what
    `sepwatch produce --format <source>` sends to its raw topic), the events
    no product here writes (`canonical.jsonl`), every record adapted in
    arrival order (`day.jsonl`, what `sepwatch replay` reads), the same day
    in canonical form with one id per device (`one-id.jsonl`), and the truth
    (`devices.jsonl`: each device's names by product). Lines written by file."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict[str, Any]]] = {s: [] for s in (*VENDOR_SOURCES, CANONICAL)}
    for arrival in d.arrivals:
        files[arrival.source].append(arrival.record)
    devices = sorted({e["device_id"] for e in d.canonical if e.get("device_id")})
    files |= {
        "day": d.adapted,
        "one-id": d.canonical,
        "devices": [{"device_id": c, **names_of(c)._asdict()} for c in devices],
    }
    for name, records in files.items():
        (folder / f"{name}.jsonl").write_bytes(b"".join(lines(records)))
    return {f"{name}.jsonl": len(records) for name, records in files.items()}
