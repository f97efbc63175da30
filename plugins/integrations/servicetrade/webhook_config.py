"""include/servicetrade_webhooks.yaml: what the receiver accepts and which notifications become events.

`load()` is pure and strict: a missing or unknown key, an entity type we cannot fetch or an action ServiceTrade
does not send fails with its name and the file's, so a typo never silently drops an account's notifications.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = Path(__file__).resolve().parents[3] / "include" / "servicetrade_webhooks.yaml"
CONFIG_ENV = "SERVICETRADE_WEBHOOKS_CONFIG"    # another file, e.g. a shorter quiet window in a test stack
# What the processing can fetch and keep (a table each in servicetrade.*); the payload's type, lower-cased.
ENTITY_TYPES = ("job", "jobitem", "invoice", "location")
ACTIONS = ("created", "updated", "deleted")
ACCOUNT_KEYS = ("quiet_seconds", "max_wait_seconds", "entities")


class WebhookConfigError(ValueError):
    """The file is malformed: the message names the key and the file."""


@dataclass(frozen=True)
class AccountRules:
    """Which notifications of one account become events, and when an event is ripe."""

    quiet_seconds: int
    max_wait_seconds: int
    entities: dict[str, frozenset[str]]     # entity type -> actions kept

    def keeps(self, entity_type: str, action: str) -> bool:
        return action in self.entities.get(entity_type, ())


@dataclass(frozen=True)
class WebhookConfig:
    max_body_bytes: int
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    defaults: AccountRules
    accounts: dict[str, AccountRules]

    def rules(self, account: str) -> AccountRules:
        return self.accounts.get(account, self.defaults)

    def allows(self, address: str | None) -> bool:
        """Whether a delivery from `address` may be read (no list: every address)."""
        if not self.allowed_networks:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_networks)


def configured_file() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or CONFIG_FILE)


def load(path: Path | None = None) -> WebhookConfig:
    path = path or configured_file()
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise WebhookConfigError(f"{path}: cannot read: {exc}") from None
    return parse(tree, str(path))


def parse(tree: Any, where: str) -> WebhookConfig:
    top = _mapping(tree, where, ("receiver", "defaults", "accounts"))
    receiver = _mapping(top["receiver"], f"{where}: receiver", ("max_body_bytes", "allowed_networks"))
    networks = []
    for value in _list(receiver["allowed_networks"], f"{where}: receiver.allowed_networks"):
        try:
            networks.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise WebhookConfigError(f"{where}: receiver.allowed_networks: {value!r} is not a network "
                                     "(e.g. 203.0.113.0/24)") from None
    defaults = _rules(top["defaults"], f"{where}: defaults", None)
    accounts = {}
    for account, overrides in (_mapping(top["accounts"], f"{where}: accounts", None) or {}).items():
        accounts[str(account)] = _rules(overrides or {}, f"{where}: accounts.{account}", defaults)
    return WebhookConfig(_positive(receiver["max_body_bytes"], f"{where}: receiver.max_body_bytes"),
                         tuple(networks), defaults, accounts)


def _rules(tree: Any, where: str, base: AccountRules | None) -> AccountRules:
    keys = _mapping(tree, where, ACCOUNT_KEYS if base is None else None)
    unknown = sorted(set(keys) - set(ACCOUNT_KEYS))
    if unknown:
        raise WebhookConfigError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(ACCOUNT_KEYS)}")
    quiet = _positive(keys["quiet_seconds"], f"{where}.quiet_seconds") if "quiet_seconds" in keys \
        else base.quiet_seconds
    wait = _positive(keys["max_wait_seconds"], f"{where}.max_wait_seconds") if "max_wait_seconds" in keys \
        else base.max_wait_seconds
    if wait < quiet:
        raise WebhookConfigError(f"{where}: max_wait_seconds {wait} is shorter than quiet_seconds {quiet}")
    entities = _entities(keys["entities"], f"{where}.entities") if "entities" in keys else base.entities
    return AccountRules(quiet, wait, entities)


def _entities(tree: Any, where: str) -> dict[str, frozenset[str]]:
    entities = {}
    for entity_type, actions in _mapping(tree, where, None).items():
        if entity_type not in ENTITY_TYPES:
            raise WebhookConfigError(f"{where}: entity type {entity_type!r} is not one we fetch; "
                                     f"valid: {', '.join(ENTITY_TYPES)}")
        for action in _list(actions, f"{where}.{entity_type}"):
            if action not in ACTIONS:
                raise WebhookConfigError(f"{where}.{entity_type}: action {action!r} is not one ServiceTrade "
                                         f"sends; valid: {', '.join(ACTIONS)}")
        entities[entity_type] = frozenset(actions)
    return entities


def _mapping(tree: Any, where: str, required: tuple[str, ...] | None) -> dict:
    if tree is None and required is None:
        return {}
    if not isinstance(tree, dict):
        raise WebhookConfigError(f"{where}: expected a mapping, found {type(tree).__name__}")
    if required is not None:
        missing = [key for key in required if key not in tree]
        if missing:
            raise WebhookConfigError(f"{where}: missing key {missing[0]!r}")
        unknown = sorted(set(tree) - set(required))
        if unknown:
            raise WebhookConfigError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(required)}")
    return tree


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise WebhookConfigError(f"{where}: expected a list, found {type(value).__name__}")
    return value


def _positive(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WebhookConfigError(f"{where}: expected a positive whole number, found {value!r}")
    return value
