"""OMS-Pro, the business's TrackVia app: payments linked to tickets, completed dates, table sweeps."""
