"""ItsPerfect: the stock of each mapped location pulled from the tenant's warehouses, and each account's
orders exported to it, within the tenant's 750 requests an hour (docs/integrations/itsperfect.md)."""
