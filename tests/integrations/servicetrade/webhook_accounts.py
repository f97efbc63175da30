"""An account whose webhook deliveries the receiver accepts, as servicetrade_webhook_subscription records it."""
from __future__ import annotations

from integrations.servicetrade.inbox import secret_digest


def register_account(conn, account: str, secret: str) -> None:
    conn.execute("INSERT INTO servicetrade.webhook_accounts (account, secret_sha256) VALUES (%s, %s) "
                 "ON CONFLICT (account) DO UPDATE SET secret_sha256 = excluded.secret_sha256",
                 (account, secret_digest(secret)))
    conn.commit()
