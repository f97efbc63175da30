"""The TrustFile data model (sales, refunds, tax, shipping) and the mappings of host systems into it."""
