"""Local simulators of the vendor APIs, for `make up` without credentials and for the tests.

One process serves every vendor under its own path prefix (`/trustfile`, ...). Each keeps the
vendor's envelopes, status codes, error bodies, paging and limits (each vendor's page in docs/integrations/),
and can be made to misbehave on purpose through `/_sandbox/faults/{vendor}`. `/_sandbox/requests`
lists what it received, so a test can count a pipeline's calls. State is in memory, and with
`--state-file` (what `make up` passes) also saved to a file and loaded at the next start, so a demo
survives a restart; it is a stand-in for a remote system, not part of our platform's state.
"""
