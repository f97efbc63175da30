"""One hook per external system (filled by the vendor-layer issue)."""
