"""One hook per external system, on the shared client (vendor_http) and declared paging (paging).

A vendor's quirks live in its hook and nowhere else: auth, paging, limits, error bodies.
"""
