"""Stratocore PPMS: orders, their lines and invoices synced from PUMAPI (docs/integrations/ppms.md)."""
