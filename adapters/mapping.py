"""The vendor mapping (`deploy/policy/vendor-mapping.yaml`): what a vendor's
names, addresses and ids mean in this institution.

It sits beside the policy, not in it: the policy is the compliance officer's
(what is allowed), the mapping is the platform team's (what the logs say).
It holds
- vendor app names and domains -> registry `app_id` (the policy registry's
  own names and `domains` count too);
- internal networks (CIDRs) and the egress proxies' public addresses ->
  `network_zone` internal, and the entity (HQ, a branch) that owns them;
- users -> entity (glob on the user id), for records without an address;
- vendor device ids -> one `device_id` (an Intune device, its Entra device id,
  its osquery host and its Falcon agent id are one device);
- vendor sensitive-information type names -> sepwatch DLP data types;
- the institution's own e-mail and sharing domains (`internal_domains`):
  a share to one of them is internal (SEP-011);
- an OS release table, for `os_patch_age_days` from an OS build;
- the zone of vendors' zone-less local times, per source.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import re
from collections.abc import Callable
from datetime import date, tzinfo
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
)

from adapters.records import Unmappable, masked
from schemas import Policy
from schemas.policy_file import PolicyError, Problem, _line_of, dotted, read_yaml

DEFAULT_MAPPING = Path("deploy/policy/vendor-mapping.yaml")
log = logging.getLogger("sepwatch")

Text = Annotated[str, Field(min_length=1, max_length=256)]
Platform = Literal["windows", "macos", "ios", "android", "linux"]
Control = Literal["managed", "disk_encrypted", "screen_lock", "os_current"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InternalNetwork(_Strict):
    cidr: IPvAnyNetwork
    entity: Text


class EgressProxy(_Strict):
    """A public address the institution's internal network reaches SaaS
    through: a SaaS log that shows it saw an internal user."""

    ip: IPvAnyAddress
    entity: Text


class UserEntity(_Strict):
    match: Text  # a glob on the user id, e.g. "*@vn.hanbit-bank.example"
    entity: Text


class AppNames(_Strict):
    app_id: Text
    names: list[Text] = []  # as vendors spell the app, any case
    domains: list[Text] = []  # a host matches its domain and every subdomain


class DeviceIds(_Strict):
    device_id: Text
    ids: Annotated[list[Text], Field(min_length=1)]


class OsRelease(_Strict):
    platform: Platform
    version: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$")]
    released: date


InternalDomain = Annotated[
    str,
    Field(
        min_length=3,
        max_length=253,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$",
    ),
]


class VendorMapping(_Strict):
    version: Literal[1] = 1
    default_entity: Text = "HQ"
    source_timezones: dict[str, Text] = {}
    internal_networks: list[InternalNetwork] = []
    egress_proxies: list[EgressProxy] = []
    users: list[UserEntity] = []
    # The institution's own domains: a share to an address in one of them (or
    # a subdomain) is internal; any other named domain is external.
    internal_domains: list[InternalDomain] = []
    apps: list[AppNames] = []
    devices: list[DeviceIds] = []
    data_types: dict[Text, Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] = {}
    os_releases: list[OsRelease] = []
    # Falcon Zero Trust Assessment signal ids (or names) that decide each control.
    crowdstrike_signals: dict[Control, list[Text]] = {}

    @field_validator("source_timezones")
    @classmethod
    def _known_zones(cls, zones: dict[str, str]) -> dict[str, str]:
        bad = []
        for source, name in zones.items():
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                bad.append(f"{source}: {name}")
        if bad:
            raise ValueError("unknown time zone: " + ", ".join(bad))
        return zones

    @field_validator("internal_domains")
    @classmethod
    def _domains_once(cls, domains: list[str]) -> list[str]:
        lowered = [d.lower().rstrip(".") for d in domains]
        twice = sorted({d for d in lowered if lowered.count(d) > 1})
        if twice:
            raise ValueError("domain listed twice: " + ", ".join(twice))
        return lowered

    @field_validator("apps")
    @classmethod
    def _one_app_per_name(cls, apps: list[AppNames]) -> list[AppNames]:
        owner: dict[str, str] = {}
        clash = set()
        for app in apps:
            for name in [*app.names, *app.domains]:
                key = name.strip().lower()
                if owner.setdefault(key, app.app_id) != app.app_id:
                    clash.add(key)
        if clash:
            raise ValueError("name or domain given to two apps: " + ", ".join(sorted(clash)))
        return apps

    @field_validator("devices")
    @classmethod
    def _one_device_per_id(cls, devices: list[DeviceIds]) -> list[DeviceIds]:
        owner: dict[str, str] = {}
        clash = set()
        for device in devices:
            for vendor_id in device.ids:
                key = vendor_id.strip().lower()
                if owner.setdefault(key, device.device_id) != device.device_id:
                    clash.add(key)
        if clash:
            raise ValueError("vendor id given to two devices: " + ", ".join(sorted(clash)))
        return devices

    # -- lookups, compiled once -----------------------------------------------

    def with_registry(self, policy: Policy | None) -> VendorMapping:
        """The registry's app ids, names and domains resolve too; the
        mapping's own entries are listed first and win."""
        if policy is None:
            return self
        extra = [
            AppNames(
                app_id=a.app_id,
                names=[a.app_id, *([a.name] if a.name else [])],
                domains=a.domains,
            )
            for a in policy.registry
        ]
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        # Built without validation: the registry is already valid, and a name
        # both files give is the mapping's (listed first).
        return type(self).model_construct(**{**fields, "apps": [*self.apps, *extra]})

    @cached_property
    def _app_names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for app in self.apps:
            for name in app.names:
                names.setdefault(name.strip().lower(), app.app_id)
        return names

    @cached_property
    def _app_domains(self) -> dict[str, str]:
        domains: dict[str, str] = {}
        for app in self.apps:
            for domain in app.domains:
                domains.setdefault(domain.strip().lower().lstrip("."), app.app_id)
        return domains

    @cached_property
    def _internal_suffixes(self) -> tuple[str, ...]:
        return tuple("." + d for d in self.internal_domains)

    def is_internal_domain(self, domain: str) -> bool:
        """Whether a lower-cased domain is one of the institution's or under one."""
        return ("." + domain).endswith(self._internal_suffixes)

    def app_of(self, name: str | None = None, host: str | None = None) -> str | None:
        """The registry `app_id` for a vendor's app name or a host; None if unknown."""
        if name:
            found = self._app_names.get(name.strip().lower())
            if found:
                return found
        if host:
            found = self._host_apps.get(host, "")
            if found == "":
                found = self._app_of_host(host)
                if len(self._host_apps) < 65_536:  # hosts repeat: a bounded memo
                    self._host_apps[host] = found
            return found
        return None

    @cached_property
    def _host_apps(self) -> dict[str, str | None]:
        return {}

    def _app_of_host(self, host: str) -> str | None:
        labels = host.strip().lower().split(".")
        for i in range(len(labels) - 1):
            found = self._app_domains.get(".".join(labels[i:]))
            if found:
                return found
        return None

    def app_or_passthrough(
        self, name: str | None, host: str | None = None, *, path: str = "app"
    ) -> str:
        """An unknown app is passed through under the vendor's own name (so
        SEP-001 fires on it), never dropped."""
        found = self.app_of(name, host)
        if found:
            return found
        label = (name or host or "").strip().lower()
        if not label:
            raise Unmappable(path, "no app name or host")
        return masked(label)[:256]

    @cached_property
    def _zones(self) -> dict[str, tuple[str, str | None, str]]:
        return {}

    @cached_property
    def _proxies(self) -> dict[Any, str]:
        return {p.ip: p.entity for p in self.egress_proxies}

    def zone_of(self, ip: str | None, path: str = "ip") -> tuple[str, str | None, str]:
        """(`network_zone`, the entity owning the network where internal, the
        bare address) for a
        client address as vendors write it: `10.1.2.3`, `10.1.2.3:51515`,
        `[2001:db8::1]:443`, `::ffff:10.1.2.3`."""
        if not ip:
            raise Unmappable(path, "no client address: the network zone cannot be decided")
        cached = self._zones.get(ip)
        if cached is not None:
            return cached
        address = _address(ip)
        if address is None:
            raise Unmappable(path, "not an IP address")
        entity = self._proxies.get(address)
        if entity is None:
            entity = next((n.entity for n in self.internal_networks if address in n.cidr), None)
        found = ("internal", entity, str(address)) if entity else ("external", None, str(address))
        if len(self._zones) > 65_536:
            self._zones.clear()
        self._zones[ip] = found
        return found

    def entity_of(self, user_id: str | None, network_entity: str | None = None) -> str:
        """The user's unit where the mapping names one, else the network's, else the default."""
        if user_id:
            found = self._user_entities.get(user_id, "")
            if found == "":
                found = next((e for glob, e in self._user_globs if glob(user_id)), None)
                if len(self._user_entities) < 65_536:
                    self._user_entities[user_id] = found
            if found:
                return found
        return network_entity or self.default_entity

    @cached_property
    def _user_globs(self) -> list[tuple[Callable[[str], object], str]]:
        return [(re.compile(fnmatch.translate(r.match)).match, r.entity) for r in self.users]

    @cached_property
    def _user_entities(self) -> dict[str, str | None]:
        return {}

    @cached_property
    def _device_ids(self) -> dict[str, str]:
        return {i.strip().lower(): d.device_id for d in self.devices for i in d.ids}

    @cached_property
    def _mapped_devices(self) -> frozenset[str]:
        return frozenset(d.device_id for d in self.devices)

    def is_mapped(self, device_id: str) -> bool:
        """Whether a hand-written `devices:` entry gave this device id: it
        overrides what the identity graph learns."""
        return device_id in self._mapped_devices

    def device_of(self, *vendor_ids: str | None) -> str | None:
        """One `device_id` for the first vendor id given: its alias where the
        mapping lists it, else the id itself, lower-cased (GUIDs differ in case
        between Intune and Entra)."""
        for vendor_id in vendor_ids:
            if not vendor_id or vendor_id == NO_DEVICE:
                continue
            key = vendor_id.strip().lower()
            if key:
                return self._device_ids.get(key, key)
        return None

    @cached_property
    def _data_types(self) -> dict[str, str]:
        return {k.strip().lower(): v for k, v in self.data_types.items()}

    def data_types_of(self, names: list[str]) -> list[str]:
        """Sepwatch data types for vendor sensitive-type names. Names the
        mapping does not know are kept, lower-cased, only where it knows none
        of them: an alert is never left without a type, and a known type is
        not diluted by a vendor's profile or policy name."""
        if len(names) == 1 and names[0]:  # the usual case, without the sets
            name = names[0].strip().lower()
            return [self._data_types.get(name, name[:128])] if name else []
        key = tuple(names)
        found = self._type_lists.get(key)
        if found is None:
            wanted = [n.strip().lower() for n in names if n and n.strip()]
            known = {self._data_types[n] for n in wanted if n in self._data_types}
            found = sorted(known or {n[:128] for n in wanted})
            if len(self._type_lists) < 4096:  # a product's lists of types repeat: a memo
                self._type_lists[key] = found
        return list(found)

    @cached_property
    def _type_lists(self) -> dict[tuple[str, ...], list[str]]:
        return {}

    @cached_property
    def _releases(self) -> dict[str, list[tuple[tuple[int, ...], date]]]:
        table: dict[str, list[tuple[tuple[int, ...], date]]] = {}
        for r in self.os_releases:
            table.setdefault(r.platform, []).append((_version(r.version), r.released))
        return {p: sorted(rows) for p, rows in table.items()}

    def patch_age(
        self, platform: str | None, version: str | None, at: str, *, path: str = "os_version"
    ) -> int:
        """Days from the release of the installed build to `at`: the build's
        release is the last patch the device can have had. A build newer than
        the table's newest in its line is aged from that newest (an upper
        bound: keep the table current)."""
        released = self._released.get((platform, version))
        if released is None:
            released = self._release_of(platform, version)
            if len(self._released) < 65_536:
                self._released[(platform, version)] = released
        if isinstance(released, str):
            raise Unmappable(path, released)
        # `at` is an adapter's RFC 3339 time: its first ten characters are its date.
        return max(0, (date.fromisoformat(at[:10]) - released).days)

    @cached_property
    def _released(self) -> dict[tuple[str | None, str | None], date | str]:
        # Builds a fleet runs repeat, those missing from the table too: both are kept.
        return {}

    def _release_of(self, platform: str | None, version: str | None) -> date | str:
        """The release of a build, or why it has none (a dead letter's reason)."""
        family = platform_of(platform)
        if family is None:
            return f"unknown platform {platform!r}"
        installed = _version(version or "")
        if not installed:
            return "missing or not a version"
        depth = 3 if family == "windows" else 1  # 10.0.22631.x / 14.x
        line = [r for r in self._releases.get(family, []) if r[0][:depth] == installed[:depth]]
        older = [r for r in line if r[0] <= installed]
        if not older:
            return f"{family} {version} is not in the release table (os_releases)"
        return older[-1][1]

    def timezone_of(self, source: str) -> tzinfo:
        """The zone of a source's zone-less local times (UTC unless the mapping says)."""
        name = self.source_timezones.get(source)
        return ZoneInfo(name) if name else _UTC


_UTC = ZoneInfo("UTC")
NO_DEVICE = "00000000-0000-0000-0000-000000000000"
_PLATFORMS = {
    "windows": "windows", "win": "windows", "windows 10": "windows", "windows 11": "windows",
    "macos": "macos", "mac": "macos", "mac os x": "macos", "osx": "macos", "darwin": "macos",
    "ios": "ios", "ipados": "ios", "iphone": "ios", "android": "android",
    "linux": "linux", "ubuntu": "linux", "rhel": "linux", "debian": "linux",
}  # fmt: skip


def platform_of(name: str | None) -> str | None:
    return _PLATFORMS.get((name or "").strip().lower())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"[0-9]+", text))


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    candidate = text.strip()
    if candidate.startswith("["):  # [v6]:port
        candidate = candidate[1 : candidate.find("]")]
    elif candidate.count(":") == 1:  # v4:port
        candidate = candidate.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def load_mapping(path: str | Path, policy: Policy | None = None) -> VendorMapping:
    """Read and check a mapping file: every problem listed with file:line,
    path and reason. With the policy, an app the mapping names must be in its
    registry (a misspelt app_id would make an evaluated app look unknown)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem(str(p), "", None, f"cannot read: {exc.strerror}")]) from None
    registry = {a.app_id for a in policy.registry} if policy is not None else None
    return parse_mapping(text, str(p), registry).with_registry(policy)


def configured_mapping(path: Path | None, policy: Policy) -> VendorMapping | None:
    """The worker's mapping, or None: none is configured, or it does not fit
    the policy. Either way only the raw-topic intake stays off (every problem
    is logged); the rules judge canonical events all the same."""
    if path is None:
        log.info("no vendor mapping configured (SEPWATCH_MAPPING): raw vendor topics are not read")
        return None
    try:
        return load_mapping(path, policy)
    except PolicyError as exc:
        log.error(
            "vendor mapping %s refused, %d problem(s); raw vendor topics are not read, "
            "the rules run on canonical events:\n%s",
            path,
            len(exc.problems),
            "\n".join(f"  {p}" for p in exc.problems),
        )
        return None


def parse_mapping(
    text: str, file: str = "<mapping>", registry: set[str] | None = None
) -> VendorMapping:
    """As `parse_policy` reads a policy, with its problem reporting, so the two
    files report problems alike."""
    node, data = read_yaml(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError([Problem(file, "", 1, "a vendor mapping is a YAML mapping")])
    problems: list[Problem] = []
    mapping: VendorMapping | None = None
    try:
        mapping = VendorMapping.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors(include_input=False, include_url=False):
            loc = tuple(e["loc"])
            reason = e["msg"].removeprefix("Value error, ")
            problems.append(Problem(file, dotted(loc), _line_of(node, loc), reason))
    apps = data.get("apps")
    if registry is not None and isinstance(apps, list):
        for i, app in enumerate(apps):
            app_id = app.get("app_id") if isinstance(app, dict) else None
            if isinstance(app_id, str) and app_id not in registry:
                at: tuple[int | str, ...] = ("apps", i, "app_id")
                reason = f"{app_id!r} is not in the policy registry"
                problems.append(Problem(file, dotted(at), _line_of(node, at), reason))
    if problems or mapping is None:
        raise PolicyError(problems)
    return mapping
