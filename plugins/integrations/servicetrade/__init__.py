"""ServiceTrade webhooks: receiver, debounced events, processing, safety net and subscriptions."""
