"""Host systems the TrustFile extractor reads sales and refunds from: one module per system."""
